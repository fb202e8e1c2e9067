// IMDS's own HTTP/1.1 transport, against raw TCP servers that answer as a real server may: framed
// by Content-Length, chunked, or the connection's end; closing idle keep-alive sockets; hostile.
import t, { type Test } from "tap";
import net from "node:net";
import { AnswerParser, KeepAlivePool } from "../../../src/cloud/imds-http.js";
import { ImdsClient } from "../../../src/cloud/imds.js";

/** A TCP server; `answer` gets each request's head and the socket. Counts connections. */
async function server(
  t: Test,
  answer: (head: string, sock: net.Socket, n: number) => void,
  host = "127.0.0.1",
): Promise<{ url: string; connections: () => number; heads: string[] }> {
  let conns = 0;
  const heads: string[] = [];
  const socks = new Set<net.Socket>();
  const srv = net.createServer((sock) => {
    conns++;
    socks.add(sock);
    sock.on("close", () => socks.delete(sock));
    let buf = "";
    sock.on("data", (d) => {
      buf += d.toString("latin1");
      let at;
      while ((at = buf.indexOf("\r\n\r\n")) >= 0) {
        const head = buf.slice(0, at);
        buf = buf.slice(at + 4);
        heads.push(head);
        answer(head, sock, heads.length);
      }
    });
    sock.on("error", () => {});
  });
  await new Promise<void>((r) => srv.listen(0, host, r));
  t.teardown(async () => {
    for (const s of socks) s.destroy();
    await new Promise((r) => srv.close(r));
  });
  const { port } = srv.address() as net.AddressInfo;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    connections: () => conns,
    heads,
  };
}

const ok = (body: string) =>
  `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

t.test(
  "Content-Length answers reuse one socket; the request carries what IMDS needs",
  async (t) => {
    const s = await server(t, (head, sock) => sock.write(ok(head.split(" ")[1])));
    const pool = new KeepAlivePool(s.url);
    t.teardown(() => pool.close());
    for (const p of ["/latest/a", "/latest/b", "/latest/c"]) {
      const a = await pool.request("GET", p, { "x-aws-ec2-metadata-token": "tok" }, 2000);
      t.same([a.status, a.body.toString()], [200, p]);
    }
    t.equal(s.connections(), 1, "three sequential reads, one connection");
    t.match(s.heads[0], /^GET \/latest\/a HTTP\/1\.1\r\nHost: 127\.0\.0\.1:\d+\r\n/);
    t.match(s.heads[0], /\r\nx-aws-ec2-metadata-token: tok$/);
    await pool.request(
      "PUT",
      "/latest/api/token",
      { "x-aws-ec2-metadata-token-ttl-seconds": "60" },
      2000,
    );
    t.match(s.heads[3], /^PUT \/latest\/api\/token HTTP\/1\.1\r\n[^]*\r\nContent-Length: 0$/);
  },
);

t.test("at most four sockets, however many reads run at once", async (t) => {
  const s = await server(t, (head, sock) => setTimeout(() => sock.write(ok("x")), 5));
  const pool = new KeepAlivePool(s.url);
  t.teardown(() => pool.close());
  const all = await Promise.all(
    Array.from({ length: 20 }, (_, i) => pool.request("GET", `/latest/${i}`, {}, 5000)),
  );
  t.equal(all.length, 20);
  t.ok(all.every((a) => a.status === 200 && a.body.toString() === "x"));
  t.equal(s.connections(), 4);
});

t.test("chunked answers, split at every byte, with extensions and trailers", async (t) => {
  const wire =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
    "5;ext=1\r\nhello\r\n" +
    "1\r\n \r\n" +
    "5\r\nworld\r\n" +
    "0\r\nX-Trailer: y\r\n\r\n";
  const s = await server(t, (_h, sock) => {
    const bytes = Buffer.from(wire);
    let i = 0;
    const drip = () => {
      if (i < bytes.length) {
        sock.write(bytes.subarray(i, ++i));
        setImmediate(drip);
      }
    };
    drip();
  });
  const pool = new KeepAlivePool(s.url);
  t.teardown(() => pool.close());
  const a = await pool.request("GET", "/latest/x", {}, 5000);
  t.equal(a.body.toString(), "hello world");
  const b = await pool.request("GET", "/latest/y", {}, 5000);
  t.equal(b.body.toString(), "hello world");
  t.equal(s.connections(), 1, "a complete chunked answer leaves the socket reusable");
});

t.test("an answer framed by the connection's end; then a new socket", async (t) => {
  const s = await server(t, (_h, sock) => sock.end("HTTP/1.0 200 OK\r\n\r\nuntil the end"));
  const pool = new KeepAlivePool(s.url);
  t.teardown(() => pool.close());
  t.equal((await pool.request("GET", "/latest/a", {}, 2000)).body.toString(), "until the end");
  t.equal((await pool.request("GET", "/latest/b", {}, 2000)).body.toString(), "until the end");
  t.equal(s.connections(), 2);
});

t.test("Connection: close is honoured", async (t) => {
  const s = await server(t, (_h, sock) =>
    sock.write("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
  );
  const pool = new KeepAlivePool(s.url);
  t.teardown(() => pool.close());
  await pool.request("GET", "/latest/a", {}, 2000);
  await pool.request("GET", "/latest/b", {}, 2000);
  t.equal(s.connections(), 2);
});

t.test("an idle socket the server closed is replaced without a failed read", async (t) => {
  // the server answers, then closes every connection a moment later (a keep-alive timeout)
  const s = await server(t, (_h, sock) => {
    sock.write(ok("fine"));
    setTimeout(() => sock.destroy(), 5);
  });
  const pool = new KeepAlivePool(s.url);
  t.teardown(() => pool.close());
  t.equal((await pool.request("GET", "/latest/a", {}, 2000)).body.toString(), "fine");
  await new Promise((r) => setTimeout(r, 50));
  t.equal((await pool.request("GET", "/latest/b", {}, 2000)).body.toString(), "fine");
  t.equal(s.connections(), 2);
});

t.test("a reused socket that dies unanswered is retried once on a new one", async (t) => {
  // the second request on a connection is swallowed and the connection reset, as a server whose
  // keep-alive timeout fires just as the request arrives
  let perConn = new WeakMap<net.Socket, number>();
  const s = await server(t, (_h, sock) => {
    const n = (perConn.get(sock) ?? 0) + 1;
    perConn.set(sock, n);
    if (n === 1) sock.write(ok("first"));
    else sock.destroy();
  });
  const pool = new KeepAlivePool(s.url);
  t.teardown(() => pool.close());
  t.equal((await pool.request("GET", "/latest/a", {}, 2000)).body.toString(), "first");
  t.equal((await pool.request("GET", "/latest/b", {}, 2000)).body.toString(), "first");
  t.equal(s.connections(), 2, "one retry on a fresh socket");
  perConn = new WeakMap();
});

t.test("a fresh socket that dies unanswered is an error for the caller's retry", async (t) => {
  const s = await server(t, (_h, sock) => sock.destroy());
  const pool = new KeepAlivePool(s.url);
  t.teardown(() => pool.close());
  await t.rejects(pool.request("GET", "/latest/a", {}, 2000), /closed the connection|ECONNRESET/);
  t.equal(s.connections(), 1, "not resent: the caller's back-off decides");
});

t.test("a silent server times out within the request's bound", async (t) => {
  const s = await server(t, () => {});
  const pool = new KeepAlivePool(s.url);
  t.teardown(() => pool.close());
  const t0 = Date.now();
  await t.rejects(pool.request("GET", "/latest/a", {}, 150), /timed out after 150 ms/);
  t.ok(Date.now() - t0 < 1000);
});

t.test("hostile answers are refused, not parsed into something", async (t) => {
  const cases: [string, RegExp][] = [
    ["SSH-2.0-OpenSSH\r\n\r\n", /other than HTTP/],
    ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", /bad Content-Length/],
    ["HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", /bad Content-Length/],
    [`HTTP/1.1 200 OK\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n`, /over 1 MiB/],
    ["HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", /malformed header/],
    ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", /bad chunk size/],
    ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", /without its CRLF/],
    [`HTTP/1.1 200 OK\r\nX: ${"a".repeat(17 * 1024)}`, /header block over 16 KB/],
  ];
  for (const [wire, re] of cases) {
    const s = await server(t, (_h, sock) => sock.write(wire));
    const pool = new KeepAlivePool(s.url);
    await t.rejects(
      pool.request("GET", "/latest/a", {}, 2000),
      re,
      JSON.stringify(wire.slice(0, 40)),
    );
    pool.close();
  }
  const big = await server(t, (_h, sock) =>
    sock.end("HTTP/1.0 200 OK\r\n\r\n" + "a".repeat(1024 * 1024 + 10)),
  );
  const pool = new KeepAlivePool(big.url);
  await t.rejects(pool.request("GET", "/latest/a", {}, 5000), /over 1 MiB/);
  pool.close();
});

t.test("a path or header that would split the request is never sent", async (t) => {
  const s = await server(t, (_h, sock) => sock.write(ok("x")));
  const pool = new KeepAlivePool(s.url);
  t.teardown(() => pool.close());
  await t.rejects(pool.request("GET", "/latest/a b", {}, 2000), TypeError);
  await t.rejects(pool.request("GET", "/latest/a\r\nX-Evil: 1", {}, 2000), TypeError);
  await t.rejects(
    pool.request("GET", "/latest/a", { "x-aws-ec2-metadata-token": "t\r\nX-Evil: 1" }, 2000),
    TypeError,
  );
  t.equal(s.heads.length, 0, "nothing reached the server");
  // through the client: a token with a line break from a hostile IMDS stops the read at once
  const evil = await server(t, (head, sock) =>
    sock.write(head.startsWith("PUT") ? ok("tok\r\nX-Evil: 1") : ok("x")),
  );
  const imds = new ImdsClient({ endpoint: evil.url });
  await t.rejects(imds.get("meta-data/mac"), TypeError);
  t.equal(evil.heads.length, 1, "only the token request was sent");
});

t.test("endpoints: an IPv6 literal, a path prefix; https is refused", async (t) => {
  const s = await server(t, (head, sock) => sock.write(ok(head.split(" ")[1])), "::1");
  const pool = new KeepAlivePool(`${s.url}/prefix/`);
  t.teardown(() => pool.close());
  t.equal((await pool.request("GET", "/latest/a", {}, 2000)).body.toString(), "/prefix/latest/a");
  t.match(s.heads[0], /\r\nHost: \[::1\]:\d+$/);
  t.throws(() => new KeepAlivePool("https://169.254.169.254"), TypeError);
});

t.test("the parser: answers without a body, and bytes after an answer", async (t) => {
  const p = new AnswerParser();
  const r = p.push(Buffer.from("HTTP/1.1 204 No Content\r\n\r\n"));
  t.same(r && [r.answer.status, r.answer.body.length, r.keep], [204, 0, true]);
  const q = new AnswerParser();
  const r2 = q.push(Buffer.from("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200"));
  t.same(
    r2 && [r2.answer.body.toString(), r2.keep],
    ["a", false],
    "never reuse a socket with unasked-for bytes",
  );
  const h = new AnswerParser();
  t.equal(
    h.push(Buffer.from("HTTP/1.1 404 Not Found\r\nContent-Le")),
    undefined,
    "incomplete head",
  );
  const r3 = h.push(Buffer.from("ngth: 9\r\n\r\nNot Found"));
  t.same(r3 && [r3.answer.status, r3.answer.body.toString()], [404, "Not Found"]);
});
