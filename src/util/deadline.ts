import { InfergridError } from '../errors.ts';

/**
 * A signal that aborts when `parent` does (keeping its reason) or when `timeoutMs` passes
 * (with DEADLINE_EXCEEDED). Call `dispose` when done so the timer does not linger.
 */
export function withDeadline(
  parent: AbortSignal,
  timeoutMs: number | undefined,
): { signal: AbortSignal; dispose: () => void } {
  if (timeoutMs === undefined) return { signal: parent, dispose: () => {} };
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(parent.reason);
  if (parent.aborted) controller.abort(parent.reason);
  else parent.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(
    () =>
      controller.abort(
        new InfergridError('DEADLINE_EXCEEDED', `deadline of ${timeoutMs} ms passed on the worker`),
      ),
    Math.max(0, timeoutMs),
  );
  return {
    signal: controller.signal,
    dispose: () => {
      clearTimeout(timer);
      parent.removeEventListener('abort', onAbort);
    },
  };
}

/** Resolves after ms, or rejects with the signal's reason when it aborts first. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
