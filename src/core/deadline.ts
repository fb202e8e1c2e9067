// Deadlines, and the one wait and back-off helper: every bounded wait and every retry delay of
// eni-dpdk (sysfs settling, EC2 attachments, IMDS, the Kubernetes API) is computed here.
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A deadline shared by every bounded wait in one apply. `abort()` (SIGTERM) ends every wait early. */
export class Deadline {
  readonly at: number;
  private aborted = false;
  private readonly wakers = new Set<() => void>();
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
    for (const w of [...this.wakers]) w();
  }
  /** Sleep `ms`, at most until this deadline, and no longer once it (or a parent) is aborted. */
  sleep(ms: number): Promise<void> {
    const chain: Deadline[] = [this];
    while (chain.at(-1)!.parent) chain.push(chain.at(-1)!.parent!);
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        for (const d of chain) d.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, Math.min(ms, this.remaining())));
      for (const d of chain) d.wakers.add(done);
    });
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

/** A token bucket's documented size: a burst capacity and a refill per second. */
export interface BucketSize {
  capacity: number;
  refillPerSec: number;
}

/** A pacer's learned state, as persisted: the backlog estimate and when it was taken (epoch ms). */
export interface PaceState {
  backlog: number;
  at: number;
}

/**
 * Pacing against a token bucket that many callers drain and none can see (EC2's request limits):
 * all a caller learns is that it was throttled. `backlog` estimates the calls the bucket must serve
 * before ours; it drains at the bucket's refill rate, and each throttle adds bucket-fulls (two in a
 * storm: a fleet of thousands is found in a few throttles; the caller says how many). A call
 * waits `slot × backlog / refill`; the slot in [0.05, 1) is fixed per caller, so callers keep one
 * order in every bucket and across restarts and spread evenly over the backlog, where random draws
 * would collide. Measured against random and exponential back-off in docs/benchmarks.md.
 */
export class BacklogPacer {
  private state: PaceState;
  readonly slot: number;
  /** when a call was last throttled: the bucket was empty then */
  private emptyAt = -Infinity;

  constructor(
    private size: BucketSize,
    /** in [0, 1): where this caller queues (e.g. from a hash of its identity) */
    slot: number,
    state?: PaceState,
    private readonly now: () => number = Date.now,
  ) {
    this.slot = 0.05 + 0.95 * Math.min(Math.max(slot, 0), 1);
    // A restored state is only advice: never from the future, never more than a day of refill.
    const t = now();
    const most = 86_400 * size.refillPerSec;
    this.state = state
      ? { backlog: Math.min(Math.max(state.backlog, 0), most), at: Math.min(state.at, t) }
      : { backlog: 0, at: t };
  }

  /** The size this pacer paces by. */
  get bucket(): BucketSize {
    return this.size;
  }

  /**
   * Pace by another size from now on (the account's own limits, once the config names them): the
   * backlog learned so far is kept, drained at the old refill until now and at the new one after.
   */
  resize(bucket: BucketSize): void {
    if (bucket.capacity === this.size.capacity && bucket.refillPerSec === this.size.refillPerSec)
      return;
    this.set(this.backlog());
    this.size = bucket;
  }

  /** The estimated backlog now: what was learned, less what the bucket refilled since. */
  backlog(): number {
    const drained = ((this.now() - this.state.at) / 1000) * this.bucket.refillPerSec;
    return Math.max(0, this.state.backlog - drained);
  }

  /**
   * How long to wait before the next call: this caller's share of the backlog once it exceeds a
   * burst, and never before the empty bucket has refilled a token (spread by the slot).
   */
  delayMs(): number {
    const b = this.backlog();
    const share = b < this.bucket.capacity ? 0 : (this.slot * b * 1000) / this.bucket.refillPerSec;
    const token = this.emptyAt + ((1 + this.slot) * 1000) / this.bucket.refillPerSec - this.now();
    return Math.max(0, share, token);
  }

  /** A call was throttled: the bucket is empty, and `bucketFulls` more are queued ahead of us. */
  throttled(bucketFulls = 2): void {
    this.emptyAt = this.now();
    this.set(this.backlog() + bucketFulls * this.bucket.capacity);
  }

  /** Raise the estimate to `backlog` (what another bucket's throttling implies); true if it rose. */
  atLeast(backlog: number): boolean {
    if (backlog <= this.backlog()) return false;
    this.set(backlog);
    return true;
  }

  snapshot(): PaceState {
    return { backlog: this.backlog(), at: this.now() };
  }

  private set(backlog: number): void {
    this.state = { backlog, at: this.now() };
  }
}
