/**
 * The floor for one more process hop: a TCP server with no framing and no parsing. By default it
 * writes back whatever it reads: a client sending a small message and waiting for it to come back
 * (pingPong in socket-floor.ts) measures the round trip between two processes on this machine — two
 * socket writes, two reads, two wake-ups — which is what a coordinator -> worker hop costs before
 * any engine code runs. With `--request-bytes M --reply-bytes N` it answers every M bytes read
 * with N bytes (transferRoundTrips in socket-floor.ts): what moving a request and its response over one
 * socket costs, with nothing else done. Reports its port to the parent over IPC like
 * bare-server.ts.
 */

import { createServer } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { 'request-bytes': { type: 'string' }, 'reply-bytes': { type: 'string' } },
});
const requestBytes = Number(values['request-bytes'] ?? 0);
const reply = values['reply-bytes'] ? Buffer.alloc(Number(values['reply-bytes']), 0x2a) : undefined;
if (reply && !(Number.isInteger(requestBytes) && requestBytes > 0)) {
  process.stderr.write('echo-server: --reply-bytes needs --request-bytes, a positive integer\n');
  process.exit(2);
}

const server = createServer((socket) => {
  socket.setNoDelay(true);
  let pending = 0;
  socket.on('data', (chunk: Buffer) => {
    if (!reply) {
      socket.write(chunk);
      return;
    }
    pending += chunk.byteLength;
    for (; pending >= requestBytes; pending -= requestBytes) socket.write(reply);
  });
  socket.on('error', () => socket.destroy());
});
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  process.send?.({ type: 'ready', role: 'echo', httpPort: port });
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('disconnect', () => process.exit(0));
