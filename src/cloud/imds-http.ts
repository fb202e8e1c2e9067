// IMDS's transport: HTTP/1.1 over a few keep-alive sockets, spoken directly on node:net. IMDS
// answers in well under a millisecond, so a boot's dozen reads cost what the client costs: Node's
// http stack took ~17 ms of CPU for a token and 11 reads where this takes ~7 (docs/benchmarks.md),
// and node:http is not loaded at all. It speaks only what IMDS needs: GET and PUT without a body,
// answers framed by Content-Length, chunked, or the end of the connection.
import type { Socket } from "node:net";
import { monotonicMs } from "../core/deadline.js";
import { lazyNet } from "../core/lazy.js";

/** An answer: the status and the body (any status; the caller decides what is an error). */
export interface HttpAnswer {
  status: number;
  body: Buffer;
}

/** Header block and body bounds: IMDS's largest answer is user-data, at most 16 KB. */
const MAX_HEAD = 16 * 1024;
const MAX_BODY = 1024 * 1024;
/** What a request line and header values may carry: visible ASCII, no CR, LF or space. */
const TOKEN_CHARS = /^[\x21-\x7e]+$/;

/** Thrown (as a TypeError, so retries stop at once) for a path or header a request cannot carry. */
function unsendable(what: string): TypeError {
  return new TypeError(`IMDS request ${what} has characters an HTTP request cannot carry`);
}

/** A request failed before any byte of its answer came back: safe to send again on a new socket. */
class NoAnswer extends Error {}

export class KeepAlivePool {
  private readonly idle: Socket[] = [];
  /** each idle socket's listeners, which leave the pool with it when the server closes it */
  private readonly idleDrops = new Map<Socket, () => void>();
  private readonly waiting: ((s: Socket | undefined) => void)[] = [];
  private busy = 0;
  readonly host: string;
  readonly port: number;
  private readonly hostHeader: string;

  /** the endpoint's own path, before /latest/ */
  readonly basePath: string;

  constructor(
    endpoint: string,
    private readonly maxSockets = 4,
  ) {
    const url = new URL(endpoint);
    this.basePath = url.pathname.replace(/\/+$/, "");
    if (url.protocol !== "http:")
      throw new TypeError(`IMDS endpoint must be http://, got ${JSON.stringify(endpoint)}`);
    this.host = url.hostname.replace(/^\[(.*)\]$/, "$1"); // an IPv6 literal without its brackets
    this.port = Number(url.port || 80);
    this.hostHeader = url.host;
  }

  /** One exchange. A reused socket the server had closed meanwhile is replaced once, transparently. */
  async request(
    method: "GET" | "PUT",
    path: string,
    headers: Readonly<Record<string, string>>,
    timeoutMs: number,
  ): Promise<HttpAnswer> {
    if (!TOKEN_CHARS.test(path)) throw unsendable("path");
    let head = `${method} ${this.basePath}${path} HTTP/1.1\r\nHost: ${this.hostHeader}\r\n`;
    for (const [k, v] of Object.entries(headers)) {
      if (!TOKEN_CHARS.test(k) || !TOKEN_CHARS.test(v)) throw unsendable(`header ${k}`);
      head += `${k}: ${v}\r\n`;
    }
    if (method === "PUT") head += "Content-Length: 0\r\n";
    head += "\r\n";
    const started = monotonicMs();
    for (let fresh = false; ; fresh = true) {
      const { socket, reused } = await this.acquire(fresh);
      try {
        const { answer, keep } = await exchange(
          socket,
          head,
          Math.max(1, timeoutMs - (monotonicMs() - started)),
          timeoutMs,
        );
        this.release(socket, keep);
        return answer;
      } catch (e) {
        this.release(socket, false);
        if (e instanceof NoAnswer && reused && !fresh) continue;
        throw e instanceof NoAnswer ? new Error(e.message, { cause: e.cause }) : e;
      }
    }
  }

  /** Close every idle socket (busy ones close when their exchange ends). */
  close(): void {
    for (const s of this.idle.splice(0)) s.destroy();
    this.idleDrops.clear();
  }

  private async acquire(fresh: boolean): Promise<{ socket: Socket; reused: boolean }> {
    if (!fresh) {
      const s = this.idle.pop();
      if (s) {
        const drop = this.idleDrops.get(s)!;
        this.idleDrops.delete(s);
        s.off("close", drop).off("end", drop).off("error", drop);
        this.busy++;
        s.ref();
        return { socket: s, reused: true };
      }
    }
    if (this.busy >= this.maxSockets && !fresh) {
      const s = await new Promise<Socket | undefined>((r) => this.waiting.push(r));
      if (s) return { socket: s, reused: true };
      // handed a slot without a socket: open one below (busy already counts it)
    } else this.busy++;
    const socket = lazyNet().connect({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    return { socket, reused: false };
  }

  private release(socket: Socket, keep: boolean): void {
    if (!keep) socket.destroy();
    const next = this.waiting.shift();
    if (next) return next(keep ? socket : undefined);
    this.busy--;
    if (!keep) return;
    // Idle: never hold the process open, and leave the pool when the server closes it.
    socket.unref();
    const drop = () => {
      const i = this.idle.indexOf(socket);
      if (i >= 0) this.idle.splice(i, 1);
      this.idleDrops.delete(socket);
      socket.destroy();
    };
    socket.once("close", drop).once("end", drop).once("error", drop);
    this.idleDrops.set(socket, drop);
    this.idle.push(socket);
  }
}

/** Write one request on the socket and read its answer. `keep`: the socket may carry another. */
function exchange(
  socket: Socket,
  head: string,
  remainingMs: number,
  boundMs: number,
): Promise<{ answer: HttpAnswer; keep: boolean }> {
  return new Promise((resolve, reject) => {
    const parser = new AnswerParser();
    let answered = false;
    const timer = setTimeout(() => fail(new Error(`timed out after ${boundMs} ms`)), remainingMs);
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("data", onData).off("end", onEnd).off("error", onError).off("close", onEnd);
    };
    const fail = (e: Error) => {
      cleanup();
      reject(answered ? e : Object.assign(new NoAnswer(e.message), { cause: e }));
    };
    const done = (r: { answer: HttpAnswer; keep: boolean }) => {
      cleanup();
      resolve(r);
    };
    const onData = (chunk: Buffer) => {
      answered = true;
      try {
        const r = parser.push(chunk);
        if (r) done(r);
      } catch (e) {
        fail(e as Error);
      }
    };
    const onEnd = () => {
      const r = parser.end();
      if (r) done({ answer: r, keep: false });
      else fail(new Error("IMDS closed the connection before its answer was complete"));
    };
    const onError = (e: Error) => fail(e);
    socket.on("data", onData).on("end", onEnd).on("error", onError).on("close", onEnd);
    socket.write(head);
  });
}

/** An HTTP/1.1 answer, fed as it arrives. */
export class AnswerParser {
  private buf: Buffer = Buffer.alloc(0);
  private status = 0;
  private bodyStart = -1;
  private length?: number;
  private chunked = false;
  private close = false;
  private readonly chunks: Buffer[] = [];
  private chunkBytes = 0;

  /** The answer once complete (with whether the connection may carry another), else undefined. */
  push(data: Buffer): { answer: HttpAnswer; keep: boolean } | undefined {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    if (this.bodyStart < 0 && !this.parseHead()) return undefined;
    const body = this.chunked ? this.dechunk() : this.fixed();
    return body ? { answer: { status: this.status, body }, keep: !this.close } : undefined;
  }

  /** The connection ended: an answer framed by the end of the connection is complete now. */
  end(): HttpAnswer | undefined {
    if (this.bodyStart < 0 || this.chunked || this.length !== undefined) return undefined;
    return { status: this.status, body: this.buf.subarray(this.bodyStart) };
  }

  private parseHead(): boolean {
    const at = this.buf.indexOf("\r\n\r\n");
    if (at < 0) {
      if (this.buf.length > MAX_HEAD) throw new Error("IMDS answered a header block over 16 KB");
      return false;
    }
    const lines = this.buf.subarray(0, at).toString("latin1").split("\r\n");
    const m = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(lines[0]);
    if (!m) throw new Error(`IMDS answered something other than HTTP: ${JSON.stringify(lines[0])}`);
    this.status = Number(m[2]);
    this.close = m[1] === "0";
    // answers that never carry a body, whatever their headers say
    if (this.status === 204 || this.status === 304 || this.status < 200) this.length = 0;
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      if (colon <= 0) throw new Error(`IMDS answered a malformed header: ${JSON.stringify(line)}`);
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === "content-length") {
        if (!/^\d{1,9}$/.test(value) || (this.length !== undefined && this.length !== +value))
          throw new Error(`IMDS answered a bad Content-Length: ${JSON.stringify(value)}`);
        if (this.length !== 0 || this.status >= 200) this.length = Number(value);
        if (this.length > MAX_BODY) throw new Error("IMDS answered a body over 1 MiB");
      } else if (name === "transfer-encoding") {
        this.chunked = value
          .toLowerCase()
          .split(/\s*,\s*/)
          .includes("chunked");
      } else if (name === "connection") {
        const tokens = value.toLowerCase().split(/\s*,\s*/);
        if (tokens.includes("close")) this.close = true;
        if (tokens.includes("keep-alive") && m[1] === "0") this.close = false;
      }
    }
    // A body framed by neither ends with the connection, which then carries nothing more.
    if (!this.chunked && this.length === undefined) this.close = true;
    if (this.chunked) this.length = undefined;
    this.bodyStart = at + 4;
    return true;
  }

  private fixed(): Buffer | undefined {
    if (this.length === undefined) {
      if (this.buf.length - this.bodyStart > MAX_BODY)
        throw new Error("IMDS answered a body over 1 MiB");
      return undefined;
    }
    const have = this.buf.length - this.bodyStart;
    if (have < this.length) return undefined;
    // Anything after the body would be an answer nobody asked for: never reuse such a socket.
    if (have > this.length) this.close = true;
    return this.buf.subarray(this.bodyStart, this.bodyStart + this.length);
  }

  private dechunk(): Buffer | undefined {
    for (;;) {
      const eol = this.buf.indexOf("\r\n", this.bodyStart);
      if (eol < 0) return undefined;
      const sizeField = this.buf.subarray(this.bodyStart, eol).toString("latin1").split(";")[0];
      if (!/^[0-9a-fA-F]{1,8}$/.test(sizeField.trim()))
        throw new Error(`IMDS answered a bad chunk size: ${JSON.stringify(sizeField)}`);
      const size = parseInt(sizeField, 16);
      if (size === 0) {
        // the last chunk, then trailers until an empty line
        const endAt = this.buf.indexOf("\r\n\r\n", eol);
        const bare = this.buf.subarray(eol, eol + 4).toString("latin1") === "\r\n\r\n";
        if (!bare && endAt < 0) return undefined;
        if ((bare ? eol + 4 : endAt + 4) < this.buf.length) this.close = true;
        return Buffer.concat(this.chunks);
      }
      if (this.chunkBytes + size > MAX_BODY) throw new Error("IMDS answered a body over 1 MiB");
      if (this.buf.length < eol + 2 + size + 2) return undefined;
      if (this.buf.subarray(eol + 2 + size, eol + 4 + size).toString("latin1") !== "\r\n")
        throw new Error("IMDS answered a chunk without its CRLF");
      this.chunks.push(this.buf.subarray(eol + 2, eol + 2 + size));
      this.chunkBytes += size;
      this.bodyStart = eol + 4 + size;
    }
  }
}
