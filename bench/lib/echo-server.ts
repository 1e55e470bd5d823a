/**
 * The floor for one more process hop: a TCP server that writes back whatever it reads, with no
 * framing and no parsing. A client sending a small message and waiting for it to come back
 * (pingPong in load.ts) measures the round trip between two processes on this machine — two
 * socket writes, two reads, two wake-ups — which is what a coordinator -> worker hop costs
 * before any engine code runs. Reports its port to the parent over IPC like bare-server.ts.
 */

import { createServer } from 'node:net';

const server = createServer((socket) => {
  socket.setNoDelay(true);
  socket.on('data', (chunk) => socket.write(chunk));
  socket.on('error', () => socket.destroy());
});
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  process.send?.({ type: 'ready', role: 'echo', httpPort: port });
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('disconnect', () => process.exit(0));
