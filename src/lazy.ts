// Lazily loaded third-party modules. In the code-split ESM bundle a dynamic import of a CommonJS
// package (the AWS SDK, yaml) yields only `default`; under tsx it yields the named exports too.
export function interop<T extends object>(mod: T, probe: keyof T): T {
  const m = mod as T & { default?: T };
  return m[probe] !== undefined ? m : (m.default ?? m);
}
