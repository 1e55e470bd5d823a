import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WORKER_MALLOC_TUNABLES, withWorkerMallocTunables } from '../../src/serve/index.ts';

test('worker malloc tunables - added on Linux, a caller-set GLIBC_TUNABLES kept as is', () => {
  const env: NodeJS.ProcessEnv = { PATH: '/bin' };
  const out = withWorkerMallocTunables(env);
  if (process.platform === 'linux') assert.equal(out.GLIBC_TUNABLES, WORKER_MALLOC_TUNABLES);
  else assert.equal(out.GLIBC_TUNABLES, undefined);
  assert.equal(out.PATH, '/bin');
  assert.equal(env.GLIBC_TUNABLES, undefined, 'the given env is not changed');
  const own = { GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' };
  assert.equal(withWorkerMallocTunables(own).GLIBC_TUNABLES, 'glibc.malloc.arena_max=2');
  // both thresholds sit above a 32,000-token vocabulary's candidate array (12 bytes a token)
  const values = Object.fromEntries(WORKER_MALLOC_TUNABLES.split(':').map((kv) => kv.split('=')));
  assert.ok(Number(values['glibc.malloc.mmap_threshold']) > 32_000 * 12);
  assert.ok(Number(values['glibc.malloc.trim_threshold']) > 32_000 * 12);
});
