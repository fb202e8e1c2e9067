// The error taxonomy. Each class carries its exit code: InputError 2 (bad input, nothing was
// changed), OpError 1 (a failure while observing or changing the node or EC2, with what to do
// next). The cloud seams' errors (EC2, Kubernetes) are OpErrors; anything else is our bug, exit 1.

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
  constructor(
    readonly problems: Problem[],
    readonly hint = "fix the input and run `eni-dpdk validate` again",
  ) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "InputError";
  }
}

/** A failure while observing or changing the host or EC2; exit code 1. `hint` says what to do next. */
export class OpError extends Error {
  readonly exitCode: number = 1;
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

/** The exit code a failure ends the process with: its class's own, else 1. */
export function exitCodeOf(err: unknown): number {
  const code = (err as { exitCode?: unknown })?.exitCode;
  return err instanceof Error && typeof code === "number" ? code : 1;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * A system call's failure as words and its code, "no space left on device (ENOSPC)": Node's own
 * message ("ENOSPC: no space left on device, write") without the code up front or the call after.
 */
export function errnoText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  const words = errorMessage(e)
    .replace(/^[A-Z]+: /, "")
    .replace(/, \w+(?: '.*')?$/, "");
  return code ? `${words} (${code})` : words;
}
