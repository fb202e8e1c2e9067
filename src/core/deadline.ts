// Deadlines, and the one wait and back-off helper: every bounded wait and every retry delay of
// eni-dpdk (sysfs settling, EC2 attachments, IMDS, the Kubernetes API) is computed here.
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/**
 * Milliseconds on the monotonic clock, for how long something took: the wall clock can step at
 * boot (chrony), and the global `performance` loads perf_hooks (about 1 ms of every start).
 */
export const monotonicMs = (): number => Number(process.hrtime.bigint()) / 1e6;

const wallAtStart = Date.now();
const monotonicAtStart = monotonicMs();
/**
 * Epoch milliseconds as of this process's start, advanced by the monotonic clock: the clock of
 * every deadline, back-off and token lifetime. A step of the wall clock (chrony's makestep at boot,
 * `date -s`) must neither end a wait at once nor stretch it by the step; values kept across starts
 * (the EC2 pacer's) are still epoch times, to within the steps since this start.
 */
export const steadyNow = (): number => wallAtStart + (monotonicMs() - monotonicAtStart);

const pad = (n: number, width = 2): string => String(n).padStart(width, "0");

/**
 * `Date#toISOString`'s text, built from the UTC fields. V8's own first toISOString asks ICU for the
 * host's time zone (it reads /etc/localtime and resolves its links): 0.25 ms of every boot on Node
 * 22, for a string that is UTC by definition.
 */
export function isoTime(ms: number = Date.now()): string {
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  // outside 0-9999 (expanded years, an invalid date), toISOString writes or throws it as it does
  if (!(year >= 0 && year <= 9999)) return d.toISOString();
  return `${pad(year, 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}Z`;
}

/** A deadline shared by every bounded wait in one apply. `abort()` (SIGTERM) ends every wait early. */
export class Deadline {
  readonly at: number;
  private aborted = false;
  private readonly wakers = new Set<() => void>();
  constructor(
    ms: number,
    private readonly now: () => number = steadyNow,
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
  const start = steadyNow();
  const until = Math.min(
    start + (opts.within ?? Infinity),
    opts.deadline ? start + opts.deadline.remaining() : Infinity,
  );
  const backoff = opts.backoff ?? SETTLE;
  for (let attempt = 0; ; attempt++) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    const left = until - steadyNow();
    if (left <= 0 || opts.deadline?.isAborted()) return undefined;
    await sleep(Math.min(left, delayFor(backoff, attempt)));
  }
}

/** A token bucket's documented size: a burst capacity and a refill per second. */
export interface BucketSize {
  capacity: number;
  refillPerSec: number;
}

/** A pacer's learned state, as persisted (times in epoch ms). */
export interface PaceState {
  /** the calls estimated queued at `at` */
  backlog: number;
  at: number;
  /** when this caller's turn comes; absent in a state saved before turns were kept */
  turn?: number;
}

/**
 * Pacing against a token bucket that many callers drain and none can see (EC2's request limits):
 * all a caller learns is that it was throttled. `backlog` estimates the calls queued; it drains at
 * the bucket's refill rate, and each throttle adds bucket-fulls (two in a storm: a fleet of
 * thousands is found in a few throttles; the caller says how many). The caller's turn comes when
 * its slot (in [0.05, 1), fixed per caller) of the backlog has drained: `slot × backlog / refill`
 * after a throttle, and `slot × added / refill` later for what another bucket's throttle adds.
 * The turn is a time, kept across calls and restarts: the callers ahead are served meanwhile, and
 * queueing anew behind what is left would count them again (a restarted unit, or an attach after
 * its create, would wait for nobody).
 * Fixed slots keep one order in every bucket, where random draws would collide. Measured against
 * random and exponential back-off in docs/benchmarks.md.
 */
export class BacklogPacer {
  private state: Required<PaceState>;
  readonly slot: number;
  /** when a call was last throttled: the bucket was empty then */
  private emptyAt = -Infinity;

  constructor(
    private size: BucketSize,
    /** in [0, 1): where this caller queues (e.g. from a hash of its identity) */
    slot: number,
    state?: PaceState,
    private readonly now: () => number = steadyNow,
  ) {
    this.slot = 0.05 + 0.95 * Math.min(Math.max(slot, 0), 1);
    // A restored state is only advice: never from the future, never more than a day of refill.
    const t = now();
    const most = 86_400 * size.refillPerSec;
    if (!state) {
      this.state = { backlog: 0, at: t, turn: t };
      return;
    }
    const backlog = Math.min(Math.max(state.backlog, 0), most);
    const at = Math.min(state.at, t);
    const turn = Number.isFinite(state.turn) ? state.turn! : at + this.shareMs(backlog);
    this.state = { backlog, at, turn: Math.min(turn, t + this.shareMs(most)) };
  }

  /** The size this pacer paces by. */
  get bucket(): BucketSize {
    return this.size;
  }

  /**
   * Pace by another size from now on (the account's own limits, once the config names them): the
   * backlog learned so far is kept, drained at the old refill until now and at the new one after,
   * and the wait left for this caller's turn scales with the refill.
   */
  resize(bucket: BucketSize): void {
    if (bucket.capacity === this.size.capacity && bucket.refillPerSec === this.size.refillPerSec)
      return;
    const t = this.now();
    const wait = Math.max(0, this.state.turn - t) * (this.size.refillPerSec / bucket.refillPerSec);
    this.state = { backlog: this.backlog(), at: t, turn: t + wait };
    this.size = bucket;
  }

  /** The estimated backlog now: what was learned, less what the bucket refilled since. */
  backlog(): number {
    const drained = ((this.now() - this.state.at) / 1000) * this.bucket.refillPerSec;
    return Math.max(0, this.state.backlog - drained);
  }

  /**
   * How long to wait before the next call: until this caller's turn while what is left exceeds a
   * burst, and never before the empty bucket has refilled a token (spread by the slot).
   */
  delayMs(): number {
    const share = this.backlog() < this.bucket.capacity ? 0 : this.state.turn - this.now();
    const token = this.emptyAt + ((1 + this.slot) * 1000) / this.bucket.refillPerSec - this.now();
    return Math.max(0, share, token);
  }

  /**
   * A call was throttled: the bucket is empty, and `bucketFulls` more are queued. The caller came
   * too early, so it queues anew behind all it knows of: a throttle costs its sender time, which
   * keeps the throttles (drawn from the account's budget) few.
   */
  throttled(bucketFulls = 2): void {
    const t = this.now();
    this.emptyAt = t;
    const backlog = this.backlog() + bucketFulls * this.bucket.capacity;
    this.state = { backlog, at: t, turn: t + this.shareMs(backlog) };
  }

  /** Raise the estimate to `backlog` (what another bucket's throttling implies); true if it rose. */
  atLeast(backlog: number): boolean {
    const more = backlog - this.backlog();
    if (more <= 0) return false;
    this.add(more);
    return true;
  }

  snapshot(): PaceState {
    return { backlog: this.backlog(), at: this.now(), turn: this.state.turn };
  }

  /** `calls` more are queued from now: this caller's share of them is ahead of its turn. */
  private add(calls: number): void {
    const t = this.now();
    this.state = {
      backlog: this.backlog() + calls,
      at: t,
      turn: Math.max(t, this.state.turn) + this.shareMs(calls),
    };
  }

  /** This caller's share of `calls`, in ms of refill. */
  private shareMs(calls: number): number {
    return (this.slot * calls * 1000) / this.bucket.refillPerSec;
  }
}
