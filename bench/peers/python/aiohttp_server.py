"""Reference peer: the minimal Herald contract on plain aiohttp, the leanest common Python stack.

The same contract as server.py (FastAPI + uvicorn), from the same `contract` module, without a
framework on top: a dict of the user's open sockets, and a publish handler that encodes each event
once and awaits `send_str` on every socket of the user. It implements only what `herald bench`
uses: `GET /ws` (HS256 JWT in `Authorization`; `welcome`, `synced`, then `event` frames) and
`POST /v1/events` (one event or `{"events":[...]}`, answered with receipts). Runs on uvloop:

    HERALD_JWT_SECRET=s HERALD_API_KEY=k .venv/bin/python aiohttp_server.py --port 7403
"""

import argparse
from collections import defaultdict

import uvloop
from aiohttp import WSMsgType, web

import contract

sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)


async def ws_endpoint(request: web.Request) -> web.StreamResponse:
    user = contract.socket_user(request.headers.get("authorization"))
    if user is None:
        return web.json_response(contract.error_body("unauthorized", "missing or invalid token"), status=401)
    ws = web.WebSocketResponse(compress=False, autoping=True)
    await ws.prepare(request)
    sockets[user].add(ws)
    try:
        for frame in contract.opening_frames(user):
            await ws.send_str(frame)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and contract.is_ping(msg.data):
                await ws.send_str('{"type":"pong"}')
    except Exception:
        pass
    finally:
        sockets[user].discard(ws)
    return ws


async def publish(request: web.Request) -> web.Response:
    try:
        batch, events = contract.parse_publish(request.headers.get("authorization"), await request.read())
    except contract.Refused as refused:
        return web.json_response(refused.body, status=refused.status)
    receipts = []
    for e in events:
        user = e["user_id"]
        receipts.append(await contract.deliver(
            e, sockets.get(user, ()), lambda ws, text: ws.send_str(text), sockets[user].discard))
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
