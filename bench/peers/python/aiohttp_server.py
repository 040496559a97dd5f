"""Reference peer: the minimal Herald contract on plain aiohttp, the leanest common Python stack.

The same contract and the same shape as server.py (FastAPI + uvicorn), without a framework on
top: a dict of the user's open sockets, a per-user seq counter, and a publish handler that encodes
each event once and awaits `send_str` on every socket of the user. It implements only what
`herald bench` uses:

- `GET /ws` with `Authorization: Bearer <HS256 JWT>` (sub = user id, exp required); sends
  `welcome` and `synced`, then `{"type":"event","seq",...}` frames;
- `POST /v1/events` with `Authorization: Bearer <API key>`: one event or `{"events":[...]}`,
  answered with receipts `{"id","seq","epoch","connections","duplicate":false}`.

No retention, resume, idempotency or run state machine. Runs on uvloop. Run:
    HERALD_JWT_SECRET=s HERALD_API_KEY=k .venv/bin/python aiohttp_server.py --port 7403
"""

import argparse
import json
import os
import uuid
from collections import defaultdict
from datetime import datetime, timezone

import jwt
import uvloop
from aiohttp import WSMsgType, web

SECRET = os.environ["HERALD_JWT_SECRET"]
API_KEYS = {k.strip() for k in os.environ["HERALD_API_KEY"].split(",") if k.strip()}
EPOCH = uuid.uuid4().hex[:12]

sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
seqs: dict[str, int] = defaultdict(int)


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def bearer(value: str | None) -> str | None:
    if value and value.startswith("Bearer "):
        return value[len("Bearer "):]
    return None


async def ws_endpoint(request: web.Request) -> web.StreamResponse:
    token = bearer(request.headers.get("authorization"))
    try:
        claims = jwt.decode(token or "", SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return error(401, "unauthorized", "missing or invalid token")
    user = claims["sub"]
    ws = web.WebSocketResponse(protocols=("herald.v1",), compress=False, autoping=True)
    await ws.prepare(request)
    seq = seqs[user]
    sockets[user].add(ws)
    try:
        await ws.send_str(json.dumps({
            "type": "welcome", "v": 1, "connection_id": uuid.uuid4().hex[:12], "user_id": user,
            "epoch": EPOCH, "seq": seq, "heartbeat_ms": 25000, "recovery": "none",
        }))
        await ws.send_str(json.dumps({"type": "synced", "seq": seq}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
            except ValueError:
                frame = None
            if isinstance(frame, dict) and frame.get("type") == "ping":
                await ws.send_str('{"type":"pong"}')
    except Exception:
        pass
    finally:
        sockets[user].discard(ws)
    return ws


async def deliver(event: dict) -> dict:
    user = event["user_id"]
    seqs[user] += 1
    seq = seqs[user]
    event_id = event.get("id") or uuid.uuid4().hex
    now = datetime.now(timezone.utc)
    frame = json.dumps({
        "type": "event", "seq": seq, "id": event_id, "user_id": user,
        "thread_id": event.get("thread_id"), "run_id": event.get("run_id"),
        "event": event["event"], "data": event.get("data") or {},
        "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
    })
    targets = list(sockets.get(user, ()))
    for ws in targets:
        try:
            await ws.send_str(frame)
        except Exception:
            sockets[user].discard(ws)
    return {"id": event_id, "seq": seq, "epoch": EPOCH, "connections": len(targets), "duplicate": False}


async def publish(request: web.Request) -> web.Response:
    if bearer(request.headers.get("authorization")) not in API_KEYS:
        return error(401, "unauthorized", "missing or unknown API key")
    try:
        body = json.loads(await request.read())
    except ValueError:
        return error(400, "invalid_json", "body is not JSON")
    batch = isinstance(body, dict) and isinstance(body.get("events"), list)
    events = body["events"] if batch else [body]
    for i, e in enumerate(events):
        if not isinstance(e, dict) or not e.get("user_id") or not e.get("event"):
            return error(400, "invalid_event", f"events[{i}]: user_id and event are required")
    receipts = [await deliver(e) for e in events]
    return web.json_response({"results": receipts} if batch else receipts[0])


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7403)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/ws", ws_endpoint)
    app.router.add_post("/v1/events", publish)
    app.router.add_get("/health/ready", ready)
    print(f"listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
