/**
 * The honest floor for any HTTP service on this machine: a bare fastify route that parses the
 * same KServe v2 JSON request and answers the same JSON response the engine would, with no
 * engine behind it. Reports its port to the parent over IPC.
 */

import Fastify from 'fastify';

interface Body {
  inputs: { name: string; datatype: string; shape: number[]; data: unknown[] }[];
}

const app = Fastify({ logger: false, bodyLimit: 64 * 1024 * 1024 });
app.post<{ Params: { model: string }; Body: Body }>('/v2/models/:model/infer', async (req) => ({
  model_name: req.params.model,
  model_version: '1',
  outputs: req.body.inputs.map((input, i) => ({
    name: `OUTPUT${i}`,
    datatype: input.datatype,
    shape: input.shape,
    data: input.data,
  })),
}));
await app.listen({ host: '127.0.0.1', port: 0 });
const { port } = app.server.address() as { port: number };
process.send?.({ type: 'ready', role: 'baseline', httpPort: port });
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
process.on('disconnect', () => process.exit(0));
