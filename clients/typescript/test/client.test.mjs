// herald-ws against the real Herald binary (node:test). Build first: npm run build.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import WebSocket from "ws";
import { HeraldClient, HeraldError, RunTracker } from "../dist/index.js";
import { gate, next, publish, sampleRun, signJwt, startHerald, uniqueUser } from "./helpers.mjs";

const NAMES = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"];

const open = new Set();
afterEach(() => {
  // A failed test must not leave a reconnecting client behind (it would keep node running).
  for (const c of open) c.close();
  open.clear();
});

/** A client for `user` on `server`, collecting its events. */
function clientFor(server, user, options = {}) {
  const client = new HeraldClient({
    url: server.ws,
    WebSocket,
    token: () => signJwt(server.secret, user),
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    ...options,
  });
  open.add(client);
  const events = [];
  const welcomes = [];
  if (process.env.DEBUG_HERALD_TEST) client.on("frame", (f) => console.error(user, f.direction, f.text));
  client.on("event", (e) => events.push(e));
  client.on("welcome", (w) => welcomes.push(w));
  /** The first received event matching `pred`, already here or still to come. */
  const seen = (pred) => {
    const hit = events.find(pred);
    return hit ? Promise.resolve(hit) : next(client, "event", pred);
  };
  return { client, events, welcomes, seen };
}

async function ticketFor(server, user) {
  const res = await fetch(`${server.http}/v1/tickets`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ user_id: user, ttl_s: 30 }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`POST /v1/tickets ${res.status}: ${JSON.stringify(body)}`);
  return body.ticket;
}

describe("against a running herald", () => {
  let server;
  before(async () => {
    server = await startHerald();
  });
  after(async () => {
    await server?.stop();
  });

  test("golden path: a published run arrives in seq order and the run helper completes it", async () => {
    const user = uniqueUser();
    const { client, events, seen } = clientFor(server, user);
    const runs = new RunTracker();
    runs.track(client);
    const synced = next(client, "synced");
    const welcome = await client.connect();
    assert.equal(welcome.user_id, user);
    assert.equal(welcome.recovery, "none");
    assert.equal((await synced).recovery, "none");
    assert.equal(client.status, "live");

    const completed = new Promise((res) => runs.onChange((run) => run.done && res(run)));
    await publish(server, { events: sampleRun(user, "run-1") });
    const run = await completed;

    assert.deepEqual(events.map((e) => e.event), NAMES);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5]);
    assert.ok(events.every((e) => e.user_id === user && e.run_id === "run-1" && e.thread_id === "thread-1"));
    assert.equal(run.state, "completed");
    assert.deepEqual(run.events.map((e) => e.event), NAMES);
    assert.equal(run.tools.length, 1);
    assert.equal(run.tools[0].status, "completed");
    assert.equal(run.tools[0].result, "sunny");
    assert.ok(run.tools[0].durationMs >= 0);
    assert.deepEqual(client.cursor, { seq: 5, epoch: welcome.epoch });

    const rtt = await client.ping();
    assert.ok(rtt >= 0);
    client.close();
    assert.equal(client.status, "closed");
  });

  test("cancel sends the run id with a ref and settles on the server's answer to that ref", async () => {
    const user = uniqueUser();
    const { client } = clientFor(server, user);
    const frames = [];
    client.on("frame", (f) => frames.push(f));
    await client.connect();
    // Herald has no upstream configured here, so the answer is an error frame with our ref.
    const err = await client.cancel("run-x").then(
      () => assert.fail("cancel without an upstream must not resolve"),
      (e) => e,
    );
    assert.ok(err instanceof HeraldError);
    assert.equal(err.code, "upstream_unavailable");
    const sent = frames.find((f) => f.direction === "out" && f.frame.type === "cancel");
    assert.equal(sent.frame.run_id, "run-x");
    assert.equal(err.ref, sent.frame.ref);
    assert.equal(client.status, "live", "an error frame leaves the connection open");
    client.close();
  });

  test("resume after the socket drops replays exactly the missed events", async () => {
    const user = uniqueUser();
    let hold = null;
    const { client, events, welcomes, seen } = clientFor(server, user, {
      token: async () => {
        if (hold) await hold.promise;
        return signJwt(server.secret, user);
      },
    });
    await client.connect();
    const first = sampleRun(user, "run-1");
    await publish(server, { events: first.slice(0, 2) });
    await seen((e) => e.seq === 2);

    // Drop the TCP connection abruptly and hold the reconnect until the missed events exist.
    hold = gate();
    const closed = next(client, "close");
    client.socket.terminate();
    const info = await closed;
    assert.equal(info.code, 1006);
    assert.ok(info.reconnectInMs != null, "the client schedules a reconnect");
    await publish(server, { events: first.slice(2) });

    const resumed = next(client, "welcome");
    const synced = next(client, "synced");
    hold.open();
    const w = await resumed;
    assert.equal(w.recovery, "replayed");
    assert.equal((await synced).seq, 5);
    assert.equal(welcomes.length, 2);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5], "each event once, in order");
    assert.deepEqual(events.map((e) => e.event), NAMES);

    // Live events keep flowing on the resumed connection.
    await publish(server, { user_id: user, event: "custom", data: { name: "after-resume" } });
    const live = await seen((e) => e.seq === 6);
    assert.equal(live.data.name, "after-resume");
    client.close();
  });

  test("a tab opened mid-answer renders the whole text from the snapshot, then the rest live", async () => {
    const user = uniqueUser();
    const delta = (i) => ({ user_id: user, run_id: "long", event: "agent_text", data: { delta: `${i} ` } });
    await publish(server, { user_id: user, run_id: "long", event: "agent_started", data: {} });
    for (let b = 0; b < 15; b++) {
      // 1,500 deltas: more than history_size (1000) keeps, so the run's start is trimmed.
      await publish(server, { events: Array.from({ length: 100 }, (_, i) => delta(b * 100 + i)) });
    }
    const { client, events } = clientFor(server, user);
    const runs = new RunTracker();
    runs.track(client);
    const synced = next(client, "synced");
    await client.connect();
    assert.equal((await synced).seq, 1501);
    const expected = (n) => Array.from({ length: n }, (_, i) => `${i} `).join("");
    assert.deepEqual(events.map((e) => [e.event, e.seq, e.snapshot]), [
      ["agent_started", 1, true],
      ["agent_text", 1501, true],
    ]);
    assert.equal(events[1].first_seq, 2);
    assert.equal(runs.get("long").text, expected(1500), "the merged delta renders like the deltas");
    assert.deepEqual(client.cursor, { seq: 1501, epoch: client.cursor.epoch }, "the cursor moves at synced");

    const done = new Promise((res) => runs.onChange((run) => run.done && res(run)));
    await publish(server, { events: [delta(1500), { user_id: user, run_id: "long", event: "agent_completed", data: {} }] });
    const run = await done;
    assert.equal(run.text, expected(1501), "then the rest live, no gap or repeat");
    assert.deepEqual(events.slice(2).map((e) => e.seq), [1502, 1503]);
    client.close();
  });

  test("reconnect() drops the socket and resumes at once without duplicates", async () => {
    const user = uniqueUser();
    const { client, events, seen } = clientFor(server, user);
    await client.connect();
    await publish(server, { events: sampleRun(user, "run-1").slice(0, 3) });
    await seen((e) => e.seq === 3);
    const resumed = next(client, "welcome");
    client.reconnect();
    assert.equal((await resumed).recovery, "replayed");
    await publish(server, { events: sampleRun(user, "run-1").slice(3) });
    await seen((e) => e.seq === 5);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5]);
    client.close();
  });

  test("a cursor kept in storage lets a new client resume where the old one stopped", async () => {
    const user = uniqueUser();
    const store = new Map();
    const storage = {
      getItem: (k) => store.get(k) ?? null,
      setItem: (k, v) => store.set(k, v),
      removeItem: (k) => store.delete(k),
    };
    const a = clientFor(server, user, { storage, storageKey: `cursor:${user}` });
    await a.client.connect();
    await publish(server, { events: sampleRun(user, "run-1").slice(0, 2) });
    await a.seen((e) => e.seq === 2);
    a.client.close();
    assert.equal(JSON.parse(store.get(`cursor:${user}`)).seq, 2);

    await publish(server, { events: sampleRun(user, "run-1").slice(2) });
    const b = clientFor(server, user, { storage, storageKey: `cursor:${user}` });
    const synced = next(b.client, "synced");
    const w = await b.client.connect();
    assert.equal(w.recovery, "replayed");
    await synced;
    assert.deepEqual(b.events.map((e) => e.seq), [3, 4, 5]);
    b.client.close();
  });

  test("a token provider's fresh token is sent on the open socket before the JWT expires", async () => {
    const user = uniqueUser();
    const issued = [];
    const { client } = clientFor(server, user, {
      // A 45 s token refreshed 43 s before expiry: the refresh is due after 1 to 2 s.
      token: () => {
        const t = signJwt(server.secret, user, 45 + issued.length * 3600);
        issued.push(t);
        return t;
      },
      refreshBeforeExpiryMs: 43_000,
    });
    let welcomes = 0;
    client.on("welcome", () => welcomes++);
    await client.connect();
    const refreshed = await next(client, "refreshed");
    assert.equal(issued.length, 2);
    assert.equal(refreshed.exp, JSON.parse(Buffer.from(issued[1].split(".")[1], "base64url")).exp);
    assert.equal(welcomes, 1, "no reconnect: the same socket carries on");
    assert.equal(client.status, "live");
    client.close();
  });

  test("a disconnect by an operator (4003) closes the client for good", async () => {
    const user = uniqueUser();
    const { client } = clientFor(server, user);
    await client.connect();
    const closed = next(client, "close");
    const res = await fetch(`${server.http}/v1/users/${user}/disconnect`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ reason: "logged out" }),
    });
    assert.equal(res.status, 200);
    const info = await closed;
    assert.deepEqual(info, { code: 4003, reason: "logged out", reconnectInMs: null });
    assert.equal(client.status, "closed");
  });

  test("ticket auth: the provider is called for every connection and each ticket works once", async () => {
    const user = uniqueUser();
    const tickets = [];
    const { client } = clientFor(server, user, {
      token: undefined,
      ticket: async () => {
        const t = await ticketFor(server, user);
        tickets.push(t);
        return t;
      },
    });
    const w = await client.connect();
    assert.equal(w.user_id, user);
    const again = next(client, "welcome");
    client.reconnect();
    assert.equal((await again).recovery, "replayed");
    assert.equal(tickets.length, 2);
    assert.notEqual(tickets[0], tickets[1]);
    client.close();

    // A used ticket is refused before the upgrade.
    const status = await new Promise((res) => {
      const ws = new WebSocket(`${server.ws}?ticket=${encodeURIComponent(tickets[0])}`, ["herald.v1"]);
      ws.on("unexpected-response", (_req, r) => res(r.statusCode));
      ws.on("open", () => {
        ws.close();
        res(101);
      });
      ws.on("error", () => {});
    });
    assert.equal(status, 401);
  });
});

test("reset: after a server restart the old cursor's epoch is gone, so the client resets", async () => {
  const secret = "reset-test-secret-0123456789";
  const apiKey = "reset-test-key";
  const user = uniqueUser();
  let server = await startHerald({ secret, apiKey });
  const port = server.port;
  try {
    const { client, events, seen } = clientFor(server, user);
    const runs = new RunTracker();
    runs.track(client);
    const first = await client.connect();
    await publish(server, { events: sampleRun(user, "run-1").slice(0, 3) });
    await seen((e) => e.seq === 3);
    assert.equal(runs.list().length, 1);

    const drained = next(client, "close");
    const exit = await server.stop();
    assert.equal(exit.code, 0);
    assert.equal((await drained).code, 1001);

    const reset = next(client, "reset");
    const synced = next(client, "synced");
    server = await startHerald({ secret, apiKey, port });
    const info = await reset;
    assert.deepEqual(info.previous, { seq: 3, epoch: first.epoch });
    assert.notEqual(info.epoch, first.epoch);
    assert.equal(client.welcome.recovery, "reset");
    assert.equal((await synced).recovery, "reset");
    assert.equal(runs.list().length, 0, "the run tracker forgot the old log on reset");

    // The new log starts at seq 1 again; the client must not drop it as a duplicate.
    await publish(server, { events: sampleRun(user, "run-2").slice(0, 1) });
    const fresh = await seen((e) => e.run_id === "run-2");
    assert.equal(fresh.seq, 1);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 1]);
    assert.equal(runs.get("run-2").state, "running");
    client.close();
  } finally {
    await server.stop();
  }
});

test("backoff: failed attempts wait longer each time, within the jitter, then give up", async () => {
  const client = new HeraldClient({
    url: "ws://127.0.0.1:9/ws", // discard port: nothing listens
    WebSocket,
    token: "x.y.z",
    reconnect: { initialDelayMs: 20, factor: 2, maxDelayMs: 60, jitter: 0.5, maxAttempts: 4 },
  });
  const delays = [];
  client.on("close", (c) => delays.push(c.reconnectInMs));
  const err = await client.connect().then(
    () => assert.fail("nothing listens there"),
    (e) => e,
  );
  assert.equal(err.code, "gave_up");
  assert.equal(client.status, "closed");
  assert.equal(delays.length, 5);
  const bases = [20, 40, 60, 60];
  bases.forEach((b, i) => assert.ok(delays[i] >= b / 2 && delays[i] <= b, `delay ${i}: ${delays[i]} within [${b / 2}, ${b}]`));
  assert.equal(delays[4], null);
});

describe("RunTracker", () => {
  const ev = (seq, event, data = {}, run_id = "r") => ({
    type: "event",
    seq,
    id: `e${seq}`,
    user_id: "u",
    thread_id: null,
    run_id,
    event,
    data,
    ts: new Date(Date.UTC(2025, 0, 1, 0, 0, 0, seq * 100)).toISOString(),
  });

  test("run_stalled marks a run stalled and a later event clears it", () => {
    const runs = new RunTracker();
    runs.apply(ev(1, "agent_started"));
    assert.equal(runs.apply(ev(2, "run_stalled")).state, "stalled");
    assert.equal(runs.apply(ev(3, "progress", { pct: 50 })).state, "running");
    assert.equal(runs.apply(ev(4, "agent_cancelled")).state, "cancelled");
    assert.equal(runs.apply(ev(5, "run_stalled")).state, "cancelled", "a stall never reopens an ended run");
  });

  test("tool calls pair by tool_call_id, else by name, and agent_error closes open ones", () => {
    const runs = new RunTracker();
    runs.apply(ev(1, "agent_started"));
    runs.apply(ev(2, "tool_executing", { tool_name: "a", tool_call_id: "x" }));
    runs.apply(ev(3, "tool_executing", { tool_name: "a", tool_call_id: "y" }));
    runs.apply(ev(4, "tool_executing", { tool_name: "b" }));
    runs.apply(ev(5, "tool_completed", { tool_name: "a", tool_call_id: "y" }));
    runs.apply(ev(6, "tool_completed", { tool_name: "b" }));
    const run = runs.apply(ev(7, "agent_error", { message: "boom" }));
    assert.equal(run.state, "error");
    assert.equal(run.error, "boom");
    const byKey = Object.fromEntries(run.tools.map((t) => [t.id ?? t.name, t]));
    assert.equal(byKey.y.status, "completed");
    assert.equal(byKey.y.durationMs, 200);
    assert.equal(byKey.b.status, "completed");
    assert.equal(byKey.b.durationMs, 200);
    assert.equal(byKey.x.status, "error");
    assert.equal(byKey.x.durationMs, 500);
  });

  test("events are grouped by run, each applied once, and events without run_id are ignored", () => {
    const runs = new RunTracker();
    runs.apply(ev(1, "agent_started", {}, "r1"));
    runs.apply(ev(2, "agent_started", {}, "r2"));
    assert.equal(runs.apply(ev(2, "agent_started", {}, "r2")), undefined);
    runs.apply(ev(3, "agent_text", { delta: "Hel" }, "r1"));
    runs.apply(ev(4, "agent_text", { delta: "lo" }, "r1"));
    assert.equal(runs.apply(ev(5, "custom", { name: "n" }, null)), undefined);
    assert.deepEqual(runs.list().map((r) => r.id), ["r1", "r2"]);
    assert.equal(runs.get("r1").text, "Hello");
    assert.equal(runs.get("r2").events.length, 1);
  });
});
