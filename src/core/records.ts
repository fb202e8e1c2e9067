// Records keyed by input. `obj[key]` on an ordinary object finds Object.prototype's members (`constructor`, `toString`,
// `__proto__`), and assigning `__proto__` replaces the prototype. Every walk over user keys looks
// keys up with `own` and writes into `nullRecord`s, and these names are never accepted as keys.

/** Object.prototype's members, plus `prototype`: never a key in any input. */
export const FORBIDDEN_KEYS: ReadonlySet<string> = new Set([
  ...Object.getOwnPropertyNames(Object.prototype),
  "prototype",
]);

export function isForbiddenKey(key: string): boolean {
  return FORBIDDEN_KEYS.has(key);
}

/** `record[key]` only when it is the record's own property: a lookup never reaches Object.prototype. */
export function own<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/** An empty record without a prototype: assigning any key, `__proto__` included, only adds an own property. */
export function nullRecord<T = unknown>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

/** A frozen null-prototype copy, for lookup tables keyed by user input. */
export function lookupTable<T>(entries: Record<string, T>): Readonly<Record<string, T>> {
  return Object.freeze(Object.assign(nullRecord<T>(), entries));
}

export const FORBIDDEN_KEY_MESSAGE =
  "is an Object.prototype member name, which is never a valid key";

/** Stable JSON (keys sorted at every level): equal values give equal text, whatever the key order. */
export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}
