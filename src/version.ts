import { readFileSync } from 'node:fs';

/** infergrid's own version, from its package.json. */
export const INFERGRID_VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
