// Signals for `run`, caught from the first line of main: a SIGHUP or SIGTERM that arrives while the
// modules load or the first apply runs is queued for the service loop, never the default "die now".
export type ServiceSignal = "SIGHUP" | "SIGTERM" | "SIGINT";
const SIGNALS: ServiceSignal[] = ["SIGHUP", "SIGTERM", "SIGINT"];

const pending: ServiceSignal[] = [];
let listener: ((s: ServiceSignal) => void) | undefined;
let installed = false;

function deliver(s: ServiceSignal): void {
  if (listener) listener(s);
  else pending.push(s);
}

/** Install the handlers once; signals are queued until `onSignal` takes them. */
export function catchSignals(): void {
  if (installed) return;
  installed = true;
  for (const s of SIGNALS) process.on(s, deliver);
}

/** Receive signals (queued ones first). Returns the function that stops receiving. */
export function onSignal(fn: (s: ServiceSignal) => void): () => void {
  catchSignals();
  listener = fn;
  for (const s of pending.splice(0)) fn(s);
  return () => {
    if (listener === fn) listener = undefined;
  };
}
