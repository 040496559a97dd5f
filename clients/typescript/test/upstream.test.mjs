// send() and cancel() through Herald's upstream (docs/protocol.md, "Upstream"), against the real binary: Herald runs
// with --upstream-url pointing at a small HTTP server here that plays the backend. It checks
// Herald-Signature with node:crypto and records what it was sent. Build first: npm run build.

import assert from "node:assert/strict";
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { after, afterEach, before, describe, test } from "node:test";
import WebSocket from "ws";
import { HeraldClient, HeraldError, RunTracker } from "../dist/index.js";
import { next, publish, sampleRun, signJwt, startHerald, uniqueUser } from "./helpers.mjs";

const NAMES = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"];

/** True when `header` is `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, at most 5 min old. */
function verifySignature(secret, header, body) {
  const parts = Object.fromEntries(
    String(header ?? "")
      .split(",")
      .map((p) => p.trim().split("=")),
  );
  const t = Number(parts.t);
  if (!Number.isInteger(t) || Math.abs(Date.now() / 1000 - t) > 300 || !parts.v1) return false;
  const expected = createHmac("sha256", secret).update(`${t}.`).update(body).digest();
  const given = Buffer.from(parts.v1, "hex");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * The backend: answers each signed POST by `reply(request)` → `{status, body}` (or `null` to never
 * answer); records every request as `{body, signed}`; refuses bad signatures with 401.
 */
async function startBackend(secret) {
  const backend = {
    requests: [],
    waiters: [],
    reply: () => ({ status: 200, body: { ok: true } }),
    /** Resolves with the first recorded request passing `pred`, already here or still to come. */
    received(pred = () => true, timeoutMs = 10_000) {
      const hit = this.requests.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((res, rej) => {
        const w = { pred, res, timer: setTimeout(() => rej(new Error("backend: no matching request")), timeoutMs) };
        this.waiters.push(w);
      });
    },
  };
  const http = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const raw = Buffer.concat(chunks);
      const signed = verifySignature(secret, req.headers["herald-signature"], raw);
      const request = { method: req.method, body: JSON.parse(raw.toString("utf8")), signed };
      backend.requests.push(request);
      for (const w of backend.waiters.filter((w) => w.pred(request))) {
        clearTimeout(w.timer);
        backend.waiters.splice(backend.waiters.indexOf(w), 1);
        w.res(request);
      }
      if (!signed) {
        res.writeHead(401, { "content-type": "application/json" }).end('{"error":"bad signature"}');
        return;
      }
      const answer = await backend.reply(request);
      if (answer == null) return; // hang: never answer (closed when the test ends)
      res.writeHead(answer.status, { "content-type": "application/json" }).end(JSON.stringify(answer.body));
    });
  });
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  backend.url = `http://127.0.0.1:${http.address().port}/herald`;
  backend.close = () =>
    new Promise((r) => {
      http.closeAllConnections();
      http.close(() => r());
    });
  return backend;
}

describe("upstream: send and cancel through herald to a backend", () => {
  const secret = `up-${randomBytes(12).toString("hex")}`;
  let backend;
  let server;
  const open = new Set();

  before(async () => {
    backend = await startBackend(secret);
    server = await startHerald({ args: ["--upstream-url", backend.url, "--upstream-secret", secret] });
  });
  after(async () => {
    await server?.stop();
    await backend?.close();
  });
  afterEach(() => {
    for (const c of open) c.close();
    open.clear();
    backend.reply = () => ({ status: 200, body: { ok: true } });
  });

  function clientFor(user, options = {}) {
    const client = new HeraldClient({
      url: server.ws,
      WebSocket,
      token: () => signJwt(server.secret, user),
      reconnect: false,
      ...options,
    });
    open.add(client);
    const frames = [];
    client.on("frame", (f) => frames.push(f));
    return { client, frames };
  }

  test("send: the ack carries the backend's status and body and the frame's ref", async () => {
    const user = uniqueUser();
    const { client, frames } = clientFor(user);
    await client.connect();
    backend.reply = (r) => ({ status: 202, body: { run_id: `run-for-${r.body.ref}`, echo: r.body.data } });

    const ack = await client.send("thread-7", { text: "What's the weather?" });

    const sent = frames.find((f) => f.direction === "out" && f.frame.type === "message").frame;
    assert.equal(typeof sent.ref, "string");
    assert.deepEqual(sent, { type: "message", thread_id: "thread-7", data: { text: "What's the weather?" }, ref: sent.ref });
    assert.deepEqual(ack, {
      type: "ack",
      ref: sent.ref,
      status: 202,
      body: { run_id: `run-for-${sent.ref}`, echo: { text: "What's the weather?" } },
    });
  });

  test("send: the backend gets a signed request with the token's user_id and this connection's id", async () => {
    const user = uniqueUser();
    const { client } = clientFor(user);
    const welcome = await client.connect();

    const ack = await client.send(null, { text: "hi", user_id: "mallory" });
    const req = await backend.received((r) => r.body.user_id === user && r.body.ref === ack.ref);

    assert.equal(req.method, "POST");
    assert.equal(req.signed, true, "Herald-Signature verifies with the shared secret");
    assert.deepEqual(req.body, {
      type: "message",
      user_id: user,
      connection_id: welcome.connection_id,
      ref: ack.ref,
      thread_id: null,
      data: { text: "hi", user_id: "mallory" },
    });
  });

  test("cancel: the backend gets the run id and the user, and the client resolves with its ack", async () => {
    const user = uniqueUser();
    const { client } = clientFor(user);
    await client.connect();
    backend.reply = (r) => ({ status: 200, body: { cancelled: r.body.run_id } });

    const ack = await client.cancel("run-42");
    const req = await backend.received((r) => r.body.user_id === user && r.body.ref === ack.ref);

    assert.equal(req.signed, true);
    assert.deepEqual(req.body, { type: "cancel", user_id: user, run_id: "run-42", ref: ack.ref });
    assert.equal(ack.status, 200);
    assert.deepEqual(ack.body, { cancelled: "run-42" });
  });

  test("a backend 500 rejects send and cancel with HeraldError upstream_error; the socket stays open", async () => {
    const user = uniqueUser();
    const { client, frames } = clientFor(user);
    await client.connect();
    backend.reply = () => ({ status: 500, body: { error: "boom" } });

    const sendErr = await client.send("t", { text: "x" }).then(
      () => assert.fail("send must reject on a backend 500"),
      (e) => e,
    );
    const cancelErr = await client.cancel("run-1").then(
      () => assert.fail("cancel must reject on a backend 500"),
      (e) => e,
    );

    for (const [err, type] of [
      [sendErr, "message"],
      [cancelErr, "cancel"],
    ]) {
      assert.ok(err instanceof HeraldError);
      assert.equal(err.code, "upstream_error");
      assert.match(err.message, /500/);
      const sent = frames.find((f) => f.direction === "out" && f.frame.type === type).frame;
      assert.equal(err.ref, sent.ref);
    }
    assert.equal(client.status, "live");
    assert.ok((await client.ping()) >= 0, "the connection still answers");
  });

  test("the full loop: the backend starts a run on the message and the client receives it in order", async () => {
    const user = uniqueUser();
    const { client } = clientFor(user);
    const runs = new RunTracker();
    runs.track(client);
    const synced = next(client, "synced");
    await client.connect();
    await synced;
    // The backend answers with a run id, then publishes the run for the user Herald named.
    let published;
    backend.reply = (r) => {
      const runId = `run-${r.body.ref}`;
      published = publish(server, { events: sampleRun(r.body.user_id, runId, r.body.thread_id) });
      return { status: 200, body: { run_id: runId } };
    };
    const completed = new Promise((res) => runs.onChange((run) => run.done && res(run)));

    const ack = await client.send("thread-9", { text: "weather?" });
    await published;
    const run = await completed;

    assert.equal(run.id, ack.body.run_id);
    assert.equal(run.state, "completed");
    assert.deepEqual(run.events.map((e) => e.event), NAMES);
    assert.ok(run.events.every((e) => e.user_id === user && e.thread_id === "thread-9"));
  });

  test("a backend that never answers: send rejects with timeout after requestTimeoutMs", async () => {
    const user = uniqueUser();
    const { client } = clientFor(user, { requestTimeoutMs: 300 });
    await client.connect();
    backend.reply = () => null;

    const err = await client.send("t", { text: "slow" }).then(
      () => assert.fail("send must not resolve"),
      (e) => e,
    );
    assert.ok(err instanceof HeraldError);
    assert.equal(err.code, "timeout");
  });

  test("a disconnect rejects a pending send with disconnected", async () => {
    const user = uniqueUser();
    const { client } = clientFor(user);
    await client.connect();
    backend.reply = () => null;

    const pending = client.send("t", { text: "hold" });
    await backend.received((r) => r.body.type === "message" && r.body.user_id === user);
    client.socket.terminate();

    const err = await pending.then(
      () => assert.fail("send must not resolve"),
      (e) => e,
    );
    assert.ok(err instanceof HeraldError);
    assert.equal(err.code, "disconnected");
  });

  test("send before connect rejects with not_connected", async () => {
    const { client } = clientFor(uniqueUser());
    const err = await client.send("t", {}).then(
      () => assert.fail("send must not resolve"),
      (e) => e,
    );
    assert.ok(err instanceof HeraldError);
    assert.equal(err.code, "not_connected");
  });
});
