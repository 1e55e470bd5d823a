/**
 * The forked mode of the load engine (load.ts's startForkedLoad): runs each job it is sent with
 * BenchRun, reports when the timed window opens and closes (with its own CPU time over it, every
 * thread), then the run's figures.
 *
 * With per-loop connections every loop sends one request before the warm-up, a wave of
 * CONNECT_WAVE at a time with the other loops waiting, so a job's connections are opened while
 * the server is idle. Measured: a coordinator on a saturated machine accepts new connections
 * slowly (its listen queue held 100+ connections, draining at about 25 a second, with 16 workers
 * and 512+ clients busy), so connections opened under load left loops idle for up to 16 s.
 */

import { BenchRun } from '../../src/cli/bench/index.ts';
import { type ForkedJob, type ForkedMessage, figures, loadSender } from './load.ts';

/** Connections opened at once, below a server's accept backlog (511). */
const CONNECT_WAVE = 128;

const send = (m: ForkedMessage) => process.send!(m);

async function runJob({ spec, window, rpsDigits }: ForkedJob): Promise<void> {
  const sender = loadSender({
    ...spec,
    // Buffers arrive as Uint8Arrays
    bodies: spec.bodies.map(({ body, headers }) => ({
      body: Buffer.from(body.buffer, body.byteOffset, body.byteLength),
      headers,
    })),
  });
  try {
    if (spec.connections === 'per-loop')
      for (let first = 0; first < spec.concurrency; first += CONNECT_WAVE) {
        const wave = Math.min(CONNECT_WAVE, spec.concurrency - first);
        await Promise.all(Array.from({ length: wave }, (_, k) => sender.send(first + k)));
      }
    let before = process.cpuUsage();
    const plan = {
      mode: { kind: 'concurrency', concurrency: spec.concurrency } as const,
      durationMs: window.durationMs,
      requests: undefined,
      warmupMs: window.warmupMs ?? 0,
    };
    const result = await new BenchRun(plan, sender, undefined, {
      onMeasureStart() {
        before = process.cpuUsage();
        send({ type: 'timed' });
      },
      onMeasureEnd() {
        const spent = process.cpuUsage(before);
        send({ type: 'stopped', cpuS: (spent.user + spent.system) / 1e6 });
      },
    }).run();
    send({ type: 'result', result: figures(result, rpsDigits) });
  } finally {
    sender.close();
  }
}

process.on('disconnect', () => process.exit(0));
process.on('message', (job: ForkedJob) => {
  runJob(job).catch((err: Error) => send({ type: 'error', message: err.stack ?? String(err) }));
});
send({ type: 'ready' });
