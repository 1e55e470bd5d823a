import { InfergridError } from '../errors.ts';
import { INFERGRID_VERSION } from '../version.ts';
import { APIKEY_HELP, runApikeyCommand } from './apikey-command.ts';
import { BENCH_HELP, runBenchCommand } from './bench-command.ts';
import { COORDINATOR_HELP, runCoordinatorCommand } from './coordinator-command.ts';
import { CREDENTIAL_HELP, runCredentialCommand } from './credential-command.ts';
import { tuneHeap } from './heap.ts';
import { SERVE_HELP, runServeCommand } from './serve-command.ts';
import { TOP_HELP, runTopCommand } from './top-command.ts';
import { WORKER_HELP, runWorkerCommand } from './worker-command.ts';

export const MAIN_HELP = `infergrid ${INFERGRID_VERSION} — a distributed inference engine

Usage: infergrid <command> [options]

Commands:
  serve        coordinator + local worker processes from one config (the embedded default)
  coordinator  the HTTP front door (KServe v2) that routes requests to workers
  worker       a process that loads models and serves them over RPC
  top          a coordinator's workers and models live in the terminal (--once, --json)
  bench        load a running coordinator with one model's requests; throughput, latency, errors
  apikey       make an HTTP API key and the hash the coordinator's config takes
  credential   print a worker's RPC key, derived from the cluster secret (--worker <id>)
  help <cmd>   help for a command

Run 'infergrid <command> --help' for a command's options.`;

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>; help: string }> = {
  serve: { run: runServeCommand, help: SERVE_HELP },
  coordinator: { run: runCoordinatorCommand, help: COORDINATOR_HELP },
  worker: { run: runWorkerCommand, help: WORKER_HELP },
  top: { run: runTopCommand, help: TOP_HELP },
  bench: { run: runBenchCommand, help: BENCH_HELP },
  apikey: { run: runApikeyCommand, help: APIKEY_HELP },
  credential: { run: runCredentialCommand, help: CREDENTIAL_HELP },
};

/** Commands that serve until stopped, whose heap is sized for serving (heap.ts). */
const LONG_RUNNING: ReadonlySet<string> = new Set(['serve', 'coordinator', 'worker']);

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h') {
    console.log(MAIN_HELP);
    return;
  }
  if (command === '--version' || command === '-v') {
    console.log(INFERGRID_VERSION);
    return;
  }
  if (command === 'help') {
    console.log(COMMANDS[rest[0] ?? '']?.help ?? MAIN_HELP);
    return;
  }
  const entry = COMMANDS[command];
  if (!entry) {
    console.error(`infergrid: unknown command "${command}"\n\n${MAIN_HELP}`);
    process.exitCode = 2;
    return;
  }
  try {
    if (LONG_RUNNING.has(command) && !rest.includes('--help') && !rest.includes('-h')) tuneHeap();
    await entry.run(rest);
  } catch (err) {
    // start-up errors (bad config, port in use) are the user's to fix: say what, not a stack
    if (err instanceof InfergridError) console.error(`infergrid ${command}: ${err.message}`);
    else console.error(`infergrid ${command}:`, err);
    process.exit(1);
  }
}
