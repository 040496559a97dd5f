// Run from the consumer project (test/pack.sh): imports the installed tarball from Node as ESM.
import assert from "node:assert/strict";
import { HeraldClient, RunTracker, SUBPROTOCOL } from "herald-ws";
import { HeraldChatTransport, RunChunkMapper } from "herald-ws/ai-sdk";

assert.equal(typeof HeraldClient, "function");
assert.equal(typeof RunTracker, "function");
assert.equal(SUBPROTOCOL, "herald.v1");
assert.equal(typeof HeraldChatTransport, "function");
assert.deepEqual(new RunChunkMapper().map({ id: "e1", run_id: "r", event: "agent_started", data: {} }), [
  { type: "start", messageId: "r" },
]);
// Only the declared entry points are public.
await assert.rejects(import("herald-ws/dist/client.js"), { code: "ERR_PACKAGE_PATH_NOT_EXPORTED" });
console.log("herald-ws imports from Node (ESM): ok");
