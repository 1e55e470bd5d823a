/**
 * glibc malloc settings for worker processes. node-llama-cpp builds a new sampler for every
 * sampled token, and each sampler allocates a candidates array of the whole vocabulary (32,000
 * × 12 bytes = 384 KB for a llama vocabulary). Above glibc's mmap threshold, or once a freed
 * chunk lets an arena's heap be trimmed, every such allocation faults in fresh zeroed pages:
 * `perf` put 4.5% of the decode loop's CPU in the kernel's clear_page alone at 16 streams (the
 * allocation frees and refaults about 94 pages per token). A fixed mmap threshold above that
 * size and a trim threshold of 64 MiB keep those pages mapped and reused: clear_page fell to
 * 1.5% (docs/llm-backend.md, "Memory allocator").
 *
 * The price is up to `trim_threshold` of freed memory kept per malloc arena instead of being
 * returned to the system. glibc reads GLIBC_TUNABLES only when a process starts, so this is set
 * in the environment of the workers `serve` starts; a worker started on its own takes it from its
 * environment (the systemd units in docs/ set it). A GLIBC_TUNABLES the caller set is kept as is.
 * Other C libraries (musl) ignore the variable.
 */

export const WORKER_MALLOC_TUNABLES =
  'glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864';

/** `env` with the workers' malloc settings, unless it already names GLIBC_TUNABLES. */
export function withWorkerMallocTunables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  if (process.platform !== 'linux' || env.GLIBC_TUNABLES !== undefined) return env;
  return { ...env, GLIBC_TUNABLES: WORKER_MALLOC_TUNABLES };
}
