// The end of start-up: a one-shot command's success, or the service's READY. The entry waits for
// it to keep V8's compiled code of the run (core/code-cache.ts), so that the cache holds what a
// boot compiles and nothing of the hours of reconciling after it.
let listener: (() => void) | undefined;

/** Called once, at the end of start-up (the entry's code cache). */
export function onStarted(fn: () => void): void {
  listener = fn;
}

/** Start-up is over; later calls do nothing. */
export function started(): void {
  const fn = listener;
  listener = undefined;
  fn?.();
}
