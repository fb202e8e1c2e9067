// Requests as the EC2 emulator records them (the Query protocol's form parameters), told apart by
// what the product sends.
import { GC_FILTERS } from "../../src/reconcile/gc.js";

/** A gc pass's read (reconcile/gc.ts): DescribeNetworkInterfaces with exactly its filters. */
export function isGcDescribe(params: Record<string, string>): boolean {
  if (params.Action !== "DescribeNetworkInterfaces") return false;
  const sent = Object.keys(params).filter((k) => k.startsWith("Filter."));
  const want = GC_FILTERS.flatMap((f, i) => [
    [`Filter.${i + 1}.Name`, f.Name],
    ...f.Values.map((v, j) => [`Filter.${i + 1}.Value.${j + 1}`, v]),
  ]);
  return sent.length === want.length && want.every(([k, v]) => params[k] === v);
}
