"""Reference peer: the minimal Herald contract on FastAPI + uvicorn + websockets.

This is the stack Herald replaces, written the way such services usually are: a dict of the
user's open sockets, a per-user seq counter, and a publish endpoint that encodes each event once
and awaits `send_text` on every socket of the user. It implements only what `herald bench` uses
(the frames and bodies are built by `contract`, shared with aiohttp_server.py):

- `GET /ws` with `Authorization: Bearer <HS256 JWT>` (sub = user id, exp required); sends
  `welcome` and `synced`, then `{"type":"event","seq",...}` frames;
- `POST /v1/events` with `Authorization: Bearer <API key>`: one event or `{"events":[...]}`,
  answered with receipts `{"id","seq","epoch","connections","duplicate":false}`.

No retention, resume, idempotency or run state machine. Run:
    HERALD_JWT_SECRET=s HERALD_API_KEY=k .venv/bin/python server.py --port 7401
"""

import argparse
from collections import defaultdict

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response

import contract

app = FastAPI()
sockets: dict[str, set[WebSocket]] = defaultdict(set)


@app.websocket("/ws")
async def ws_endpoint(ws: WebSocket):
    user = contract.socket_user(ws.headers.get("authorization"))
    if user is None:
        await ws.close(code=1008)  # uvicorn answers 403 before the upgrade
        return
    await ws.accept()
    sockets[user].add(ws)
    try:
        for frame in contract.opening_frames(user):
            await ws.send_text(frame)
        while True:
            if contract.is_ping(await ws.receive_text()):
                await ws.send_text('{"type":"pong"}')
    except Exception:
        pass
    finally:
        sockets[user].discard(ws)


@app.post("/v1/events")
async def publish(request: Request):
    try:
        batch, events = contract.parse_publish(request.headers.get("authorization"), await request.body())
    except contract.Refused as refused:
        return JSONResponse(refused.body, status_code=refused.status)
    receipts = []
    for e in events:
        user = e["user_id"]
        receipts.append(await contract.deliver(
            e, sockets.get(user, ()), lambda ws, text: ws.send_text(text), sockets[user].discard))
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
