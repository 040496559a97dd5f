"""Reference peer: the minimal Herald contract on FastAPI + uvicorn + websockets.

This is the stack Herald replaces, written the way such services usually are: a dict of the
user's open sockets, a per-user seq counter, and a publish endpoint that encodes each event once
and awaits `send_text` on every socket of the user. It implements only what `herald bench` uses:

- `GET /ws` with `Authorization: Bearer <HS256 JWT>` (sub = user id, exp required); sends
  `welcome` and `synced`, then `{"type":"event","seq",...}` frames;
- `POST /v1/events` with `Authorization: Bearer <API key>`: one event or `{"events":[...]}`,
  answered with receipts `{"id","seq","epoch","connections","duplicate":false}`.

No retention, resume, idempotency or run state machine. Run:
    HERALD_JWT_SECRET=s HERALD_API_KEY=k .venv/bin/python server.py --port 7401
"""

import argparse
import json
import os
import uuid
from collections import defaultdict
from datetime import datetime, timezone

import jwt
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response

SECRET = os.environ["HERALD_JWT_SECRET"]
API_KEYS = {k.strip() for k in os.environ["HERALD_API_KEY"].split(",") if k.strip()}
EPOCH = uuid.uuid4().hex[:12]

app = FastAPI()
sockets: dict[str, set[WebSocket]] = defaultdict(set)
seqs: dict[str, int] = defaultdict(int)


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def bearer(value: str | None) -> str | None:
    if value and value.startswith("Bearer "):
        return value[len("Bearer "):]
    return None


@app.websocket("/ws")
async def ws_endpoint(ws: WebSocket):
    token = bearer(ws.headers.get("authorization"))
    try:
        claims = jwt.decode(token or "", SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        await ws.close(code=1008)  # uvicorn answers 403 before the upgrade
        return
    user = claims["sub"]
    await ws.accept()
    seq = seqs[user]
    sockets[user].add(ws)
    try:
        await ws.send_text(json.dumps({
            "type": "welcome", "v": 1, "connection_id": uuid.uuid4().hex[:12], "user_id": user,
            "epoch": EPOCH, "seq": seq, "heartbeat_ms": 25000, "recovery": "none",
        }))
        await ws.send_text(json.dumps({"type": "synced", "seq": seq}))
        while True:
            text = await ws.receive_text()
            try:
                frame = json.loads(text)
            except ValueError:
                frame = None
            if isinstance(frame, dict) and frame.get("type") == "ping":
                await ws.send_text('{"type":"pong"}')
    except Exception:
        pass
    finally:
        sockets[user].discard(ws)


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
            await ws.send_text(frame)
        except Exception:
            sockets[user].discard(ws)
    return {"id": event_id, "seq": seq, "epoch": EPOCH, "connections": len(targets), "duplicate": False}


@app.post("/v1/events")
async def publish(request: Request):
    if bearer(request.headers.get("authorization")) not in API_KEYS:
        return error(401, "unauthorized", "missing or unknown API key")
    try:
        body = json.loads(await request.body())
    except ValueError:
        return error(400, "invalid_json", "body is not JSON")
    batch = isinstance(body, dict) and isinstance(body.get("events"), list)
    events = body["events"] if batch else [body]
    for i, e in enumerate(events):
        if not isinstance(e, dict) or not e.get("user_id") or not e.get("event"):
            return error(400, "invalid_event", f"events[{i}]: user_id and event are required")
    receipts = [await deliver(e) for e in events]
    return {"results": receipts} if batch else receipts[0]


@app.get("/health/ready")
async def ready():
    return Response("ok")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7401)
    args = parser.parse_args()
    print(f"listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                ws="websockets-sansio", loop="uvloop", http="httptools", ws_per_message_deflate=False)
