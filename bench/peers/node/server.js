// Reference peer: the minimal Herald contract on Node's http module + `ws`.
//
// GET /ws with `Authorization: Bearer <HS256 JWT>` (sub = user id, exp required) → `welcome`,
// `synced`, then `{"type":"event","seq",...}` frames. POST /v1/events with the API key: one event
// or {"events":[...]}, each encoded once and sent to every socket of its user; receipts come back.
// No retention, resume, idempotency or run state machine.
//
//   HERALD_JWT_SECRET=s HERALD_API_KEY=k node server.js --port 7402
'use strict';

const http = require('http');
const crypto = require('crypto');
const jwt = require('jsonwebtoken');
const { WebSocketServer } = require('ws');

const SECRET = process.env.HERALD_JWT_SECRET;
const API_KEYS = new Set((process.env.HERALD_API_KEY || '').split(',').map((k) => k.trim()).filter(Boolean));
if (!SECRET || API_KEYS.size === 0) {
  console.error('set HERALD_JWT_SECRET and HERALD_API_KEY');
  process.exit(2);
}
const portArg = process.argv.indexOf('--port');
const PORT = portArg > 0 ? Number(process.argv[portArg + 1]) : 7402;
const HOST = '127.0.0.1';
const EPOCH = crypto.randomBytes(6).toString('hex');

const sockets = new Map(); // user → Set<WebSocket>
const seqs = new Map(); // user → last seq

function bearer(header) {
  return header && header.startsWith('Bearer ') ? header.slice(7) : null;
}

function sendError(res, status, code, message) {
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function deliver(event) {
  const user = event.user_id;
  const seq = (seqs.get(user) || 0) + 1;
  seqs.set(user, seq);
  const id = event.id || crypto.randomUUID();
  const frame = JSON.stringify({
    type: 'event', seq, id, user_id: user,
    thread_id: event.thread_id ?? null, run_id: event.run_id ?? null,
    event: event.event, data: event.data || {}, ts: new Date().toISOString(),
  });
  const targets = sockets.get(user);
  let connections = 0;
  if (targets) {
    for (const ws of targets) {
      if (ws.readyState === ws.OPEN) {
        ws.send(frame);
        connections++;
      }
    }
  }
  return { id, seq, epoch: EPOCH, connections, duplicate: false };
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/health/ready') {
    res.end('ok');
    return;
  }
  if (req.method !== 'POST' || req.url !== '/v1/events') {
    sendError(res, 404, 'not_found', 'no such route');
    return;
  }
  if (!API_KEYS.has(bearer(req.headers.authorization))) {
    sendError(res, 401, 'unauthorized', 'missing or unknown API key');
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      sendError(res, 400, 'invalid_json', 'body is not JSON');
      return;
    }
    const batch = body && Array.isArray(body.events);
    const events = batch ? body.events : [body];
    for (let i = 0; i < events.length; i++) {
      const e = events[i];
      if (!e || typeof e !== 'object' || !e.user_id || !e.event) {
        sendError(res, 400, 'invalid_event', `events[${i}]: user_id and event are required`);
        return;
      }
    }
    const receipts = events.map(deliver);
    const out = JSON.stringify(batch ? { results: receipts } : receipts[0]);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
    res.end(out);
  });
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  let claims;
  try {
    if (!req.url.startsWith('/ws')) throw new Error('not found');
    claims = jwt.verify(bearer(req.headers.authorization) || '', SECRET, { algorithms: ['HS256'] });
    if (!claims.sub || !claims.exp) throw new Error('sub and exp are required');
  } catch (e) {
    const body = JSON.stringify({ error: { code: 'unauthorized', message: String(e.message) } });
    socket.end(`HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const user = String(claims.sub);
    const seq = seqs.get(user) || 0;
    let set = sockets.get(user);
    if (!set) {
      set = new Set();
      sockets.set(user, set);
    }
    ws.send(JSON.stringify({
      type: 'welcome', v: 1, connection_id: crypto.randomBytes(6).toString('hex'), user_id: user,
      epoch: EPOCH, seq, heartbeat_ms: 25000, recovery: 'none',
    }));
    ws.send(JSON.stringify({ type: 'synced', seq }));
    set.add(ws);
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      try {
        if (JSON.parse(data.toString()).type === 'ping') ws.send('{"type":"pong"}');
      } catch {
        ws.send('{"type":"error","code":"invalid_json","message":"not JSON"}');
      }
    });
    ws.on('close', () => {
      set.delete(ws);
      if (set.size === 0 && sockets.get(user) === set) sockets.delete(user);
    });
    ws.on('error', () => {});
  });
});

server.listen(PORT, HOST, () => console.log(`listening on http://${HOST}:${server.address().port}`));
const stop = () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 1000).unref();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
