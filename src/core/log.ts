// One line per event on stderr. journald adds the timestamp; when stderr is journald's stream (the
// one JOURNAL_STREAM names) we prefix the sd-daemon priority (<3>, <4>, <6>, <7>) so `journalctl -p
// warning` works, and a redirect to a file from inside a unit gets plain lines.
import { inputs } from "./inputs.js";
import { stderr } from "./stdio.js";

export type Level = "debug" | "info" | "warn" | "error";
export type LogFormat = "text" | "json";
export type Fields = Record<string, unknown>;

const rank: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const syslogPriority: Record<Level, number> = { debug: 7, info: 6, warn: 4, error: 3 };

export interface LogSink {
  write(line: string): void;
}

export class Logger {
  private readonly journal: boolean;
  constructor(
    readonly level: Level = "info",
    readonly format: LogFormat = "text",
    private readonly sink: LogSink = stderr,
    private readonly base: Fields = {},
    journal?: boolean,
  ) {
    this.journal = journal ?? (sink === stderr && stderr.isJournal());
  }

  child(fields: Fields): Logger {
    return new Logger(
      this.level,
      this.format,
      this.sink,
      { ...this.base, ...fields },
      this.journal,
    );
  }

  debug(msg: string, fields: Fields = {}): void {
    this.emit("debug", msg, fields);
  }
  info(msg: string, fields: Fields = {}): void {
    this.emit("info", msg, fields);
  }
  warn(msg: string, fields: Fields = {}): void {
    this.emit("warn", msg, fields);
  }
  error(msg: string, fields: Fields = {}): void {
    this.emit("error", msg, fields);
  }

  enabled(level: Level): boolean {
    return rank[level] >= rank[this.level];
  }

  private emit(level: Level, msg: string, fields: Fields): void {
    // warnings and errors are recorded for the unchanged apply even when not shown
    const recorded = level === "warn" || level === "error";
    if (!recorded && !this.enabled(level)) return;
    const all = { ...this.base, ...fields };
    if (recorded) inputs.log({ level, msg, fields: all });
    if (!this.enabled(level)) return;
    let line: string;
    if (this.format === "json") {
      line = JSON.stringify({ level, msg, ...all }, jsonSafe);
    } else {
      line = `level=${level} msg=${quote(msg)}`;
      for (const [k, v] of Object.entries(all)) {
        if (v === undefined) continue;
        line += ` ${k}=${quote(render(v))}`;
      }
    }
    this.sink.write((this.journal ? `<${syslogPriority[level]}>` : "") + line + "\n");
  }
}

function jsonSafe(_k: string, v: unknown): unknown {
  if (v instanceof Error) return v.message;
  if (typeof v === "bigint") return v.toString();
  return v;
}

function render(v: unknown): string {
  if (v instanceof Error) return v.message;
  if (typeof v === "string") return v;
  if (Array.isArray(v)) return v.map(render).join(",");
  if (v !== null && typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function quote(s: string): string {
  return /^[^\s"=]+$/.test(s) ? s : JSON.stringify(s);
}

/** A logger that drops everything; for library callers and tests that only check results. */
export const silentLogger = new Logger("error", "text", { write() {} });
