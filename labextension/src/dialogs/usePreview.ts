/**
 * The scheduler's answer about what is being typed, asked once the typing pauses.
 *
 * The Schedule dialog shows what the scheduler says of its cron expression and parameter
 * values while they are typed (the service is the only judge of both); this hook asks it
 * for the latest value only, a short pause after the last change, and aborts the request
 * for a value typed over. Plain React (no JupyterLab imports).
 */
import * as React from 'react';

/** Where a preview is: waiting for the service, its answer, or its refusal's message. */
export type Preview<T> =
  { status: 'checking' } | { status: 'ok'; data: T } | { status: 'error'; message: string };

/** How long the typing must pause before the service is asked (milliseconds). */
export const PREVIEW_DELAY_MS = 350;

/**
 * The answer of ``ask`` for the latest ``key`` (compared as JSON).
 *
 * ``checking`` from each change until the answer for it comes; an answer for a key typed
 * over never shows.
 */
export function usePreview<K, T>(
  key: K,
  ask: (key: K, signal: AbortSignal) => Promise<T>,
  delay: number = PREVIEW_DELAY_MS
): Preview<T> {
  const [state, setState] = React.useState<Preview<T>>({ status: 'checking' });
  const serial = JSON.stringify(key);
  React.useEffect(() => {
    setState({ status: 'checking' });
    const controller = new AbortController();
    const timer = setTimeout(() => {
      ask(key, controller.signal).then(
        data => {
          if (!controller.signal.aborted) {
            setState({ status: 'ok', data });
          }
        },
        (error: unknown) => {
          if (!controller.signal.aborted) {
            const message = error instanceof Error ? error.message : String(error);
            setState({ status: 'error', message });
          }
        }
      );
    }, delay);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
    // the key's JSON stands for the key (a new object with the same content asks nothing);
    // ``ask`` is a new function at each render and is not a reason to ask again
  }, [serial, delay]);
  return state;
}
