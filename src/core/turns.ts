// Devices are bound at once. What reads a file and then writes it (an atomic write that skips
// unchanged content, the journal's read-modify-write) takes turns per key, in the order asked; and
// the devices' work is awaited whole, so that none is left running when one fails.

export class Turns {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Run `fn` once every earlier call with the same key has settled. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    const mine = before.then(fn, fn);
    const tail = mine.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    // forget the key once nothing is queued on it
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return mine;
  }
}

/**
 * Every promise settled, then their values in order, or the first error: unlike Promise.all, no
 * device's work is still running when its caller gives up.
 */
export async function allSettledOrThrow<T>(work: Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(work);
  const thrown = settled.find((o): o is PromiseRejectedResult => o.status === "rejected");
  if (thrown) throw thrown.reason;
  return settled.map((o) => (o as PromiseFulfilledResult<T>).value);
}
