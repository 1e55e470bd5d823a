/** Process plumbing shared by the commands: parent notifications and orderly shutdown. */

/** Messages a child process sends its parent over IPC (tests and `serve` listen for them). */
export type ParentMessage =
  | { type: 'ready'; role: 'coordinator'; httpPort: number; rpcPort: number }
  | { type: 'ready'; role: 'worker'; id: string; port: number | null; metricsPort?: number | null }
  | {
      type: 'models';
      id: string;
      models: { name: string; version: string; state: string; error?: string }[];
    };

export function notifyParent(message: ParentMessage): void {
  if (process.send && process.connected) process.send(message);
}

/**
 * Runs `shutdown` once on the first SIGTERM or SIGINT, then exits with its code. A second
 * signal exits at once with 1.
 */
export function onShutdownSignal(shutdown: (signal: NodeJS.Signals) => Promise<number>): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (stopping) process.exit(1);
    stopping = true;
    shutdown(signal).then(
      (code) => process.exit(code),
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  // a parent that dies without signalling (IPC channel closed) takes its children with it
  if (process.send) process.on('disconnect', () => handler('SIGTERM'));
}

/** A crash is logged and exits the process; a supervisor restarts it. Never limp on. */
export function exitOnFatal(log: (err: unknown, what: string) => void): void {
  process.on('uncaughtException', (err) => {
    log(err, 'uncaught exception');
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    log(err, 'unhandled rejection');
    process.exit(1);
  });
}
