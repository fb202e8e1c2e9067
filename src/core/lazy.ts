// Lazily loaded modules. In the code-split ESM bundle a dynamic import of a CommonJS package (the
// AWS SDK, yaml, toml) yields only `default`; under tsx it yields the named exports too.
import { createRequire } from "node:module";

export function interop<T extends object>(mod: T, probe: keyof T): T {
  const m = mod as T & { default?: T };
  return m[probe] !== undefined ? m : (m.default ?? m);
}

/** require() for what loads on first use: built-ins, and the sd-notify addon the bundle keeps external. */
export const lazyRequire = createRequire(import.meta.url);

/**
 * Node built-ins that only rare paths need (crypto for client tokens, zlib for gzip user-data),
 * loaded on first use: each costs milliseconds of start-up that a converged boot never needs.
 */
export const lazyCrypto = (): typeof import("node:crypto") => lazyRequire("node:crypto");
export const lazyZlib = (): typeof import("node:zlib") => lazyRequire("node:zlib");
