// One at a time per key, in the order asked: what reads a file and then writes it (an atomic
// write that skips unchanged content, the journal's read-modify-write) must not interleave with
// another of the same, now that devices are bound at once.

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
