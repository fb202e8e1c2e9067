// Error types map to exit codes: InputError → 2 (nothing changed), everything else → 1.

/** One problem with the input: where it came from, which key, and what was expected. */
export interface Problem {
  /** file path with line:column, `user-data part 2 (application/eni-dpdk+toml)`, `tag eni-dpdk:eni:data1`, `NodeENI <name>`, `env ENABLE_DPDK` */
  source: string;
  /** dotted key path, e.g. `eni.data1.dpdk.resource_name` */
  key: string;
  message: string;
}

export function formatProblem(p: Problem): string {
  return `${p.source}: ${p.key}: ${p.message}`;
}

/** Bad input. Raised before any mutation; exit code 2. */
export class InputError extends Error {
  readonly exitCode = 2;
  constructor(readonly problems: Problem[], readonly hint = "fix the input and run `eni-dpdk validate` again") {
    super(problems.map(formatProblem).join("\n"));
    this.name = "InputError";
  }
}

/** A failure while observing or changing the host or EC2; exit code 1. `hint` says what to do next. */
export class OpError extends Error {
  readonly exitCode = 1;
  constructor(
    message: string,
    readonly hint: string,
    readonly fields: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "OpError";
  }
}

export function exitCodeOf(err: unknown): number {
  if (err instanceof InputError) return 2;
  return 1;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
