// Deadlines, and the one wait and back-off helper: every bounded wait and every retry delay of
// eni-dpdk (sysfs settling, EC2 attachments, IMDS, the Kubernetes API) is computed here.
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A deadline shared by every bounded wait in one apply. `abort()` (SIGTERM) ends every wait early. */
export class Deadline {
  readonly at: number;
  private aborted = false;
  constructor(
    ms: number,
    private readonly now: () => number = Date.now,
    private readonly parent?: Deadline,
  ) {
    this.at = Math.min(now() + ms, parent?.at ?? Infinity);
  }
  /** A deadline no later than this one, aborted with it. */
  within(ms: number): Deadline {
    return new Deadline(ms, this.now, this);
  }
  remaining(): number {
    return this.aborted || this.parent?.isAborted() ? 0 : Math.max(0, this.at - this.now());
  }
  abort(): void {
    this.aborted = true;
  }
  isAborted(): boolean {
    return this.aborted || !!this.parent?.isAborted();
  }
  expired(): boolean {
    return this.remaining() === 0;
  }
}

/**
 * A back-off: the n-th delay is first × growth^n, capped at max. Jitter spreads callers apart:
 * "full" draws from [0, delay) (for retries against a shared, throttling service), a number f
 * draws from [delay·(1−f), delay·(1+f)), none (the default) waits exactly.
 */
export interface Backoff {
  firstMs: number;
  maxMs: number;
  growth?: number;
  jitter?: "full" | number;
}

/** The delay before retry `attempt` (0 for the first retry). */
export function delayFor(b: Backoff, attempt: number, random: () => number = Math.random): number {
  const d = Math.min(b.maxMs, b.firstMs * (b.growth ?? 2) ** attempt);
  if (b.jitter === "full") return random() * d;
  if (typeof b.jitter === "number") return d * (1 - b.jitter + 2 * b.jitter * random());
  return d;
}

/** How sysfs effects are awaited: the first read usually shows them already (a real kernel is synchronous). */
export const SETTLE: Backoff = { firstMs: 2, maxMs: 10 };

/**
 * Poll `probe` until it returns a value other than undefined or false, waiting by `backoff` between
 * tries, for at most `within` ms or until the deadline. Resolves undefined when time ran out.
 * A probe that throws ends the wait with its error.
 */
export async function pollUntil<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  opts: { within?: number; deadline?: Deadline; backoff?: Backoff },
): Promise<T | undefined> {
  const until = Math.min(
    Date.now() + (opts.within ?? Infinity),
    opts.deadline ? Date.now() + opts.deadline.remaining() : Infinity,
  );
  const backoff = opts.backoff ?? SETTLE;
  for (let attempt = 0; ; attempt++) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    const left = until - Date.now();
    if (left <= 0 || opts.deadline?.isAborted()) return undefined;
    await sleep(Math.min(left, delayFor(backoff, attempt)));
  }
}
