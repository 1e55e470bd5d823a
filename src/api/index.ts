export { type HttpServerOptions, createHttpServer } from './http-server.ts';
export { TIMEOUT_HEADER } from './timeout.ts';
