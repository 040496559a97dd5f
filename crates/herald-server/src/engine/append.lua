-- Herald: append a batch of one user's events atomically.
--
-- KEYS: 1 meta (hash: epoch, seq), 2 log (stream, id "<seq>-0"), 3 ids (zset id -> seq),
--       4 runs (hash run_id -> RunState JSON). All hash-tagged by user: one cluster slot.
-- ARGV: 1 epoch to create if the log is gone, 2 max events, 3 ttl ms, 4 pub/sub channel,
--       5 number of runs R, then R x (run_id, expected state or "", new state or ""),
--       then number of events N, then N x (id, run_id or "", kind, frame after its seq).
--
-- The caller validated the batch against the run states it read. Here those states are
-- compared (compare-and-set): if a run or an id changed meanwhile, nothing is written and
-- {"conflict", why} comes back, so the caller re-reads and validates again.
-- Returns {"ok", epoch, receivers, seq1, ..., seqN}.
local meta, log, ids, runs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local maxlen, ttl_ms, channel = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local i = 5
local nruns = tonumber(ARGV[i]); i = i + 1
local updates = {}
for _ = 1, nruns do
  local run_id, expected, new = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local current = redis.call('HGET', runs, run_id) or ''
  if current ~= expected then return {'conflict', 'run ' .. run_id} end
  updates[#updates + 1] = {run_id, new}
end
local nev = tonumber(ARGV[i]); i = i + 1
local first = i
for e = 0, nev - 1 do
  if redis.call('ZSCORE', ids, ARGV[first + e * 4]) then return {'conflict', 'id'} end
end

local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', log, ids, runs)
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {'ok', epoch, 0}
local receivers = 0
local seq = 0
for e = 0, nev - 1 do
  local b = first + e * 4
  local id, run_id, kind, rest = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  seq = redis.call('HINCRBY', meta, 'seq', 1)
  local frame = '{"type":"event","seq":' .. seq .. rest
  redis.call('XADD', log, 'MAXLEN', maxlen, seq .. '-0', 'f', frame, 'i', id, 'r', run_id, 'k', kind, 't', now_ms)
  redis.call('ZADD', ids, seq, id)
  receivers = redis.call('PUBLISH', channel,
    epoch .. '\n' .. seq .. '\n' .. now_ms .. '\n' .. id .. '\n' .. run_id .. '\n' .. kind .. '\n' .. frame)
  out[#out + 1] = seq
end
out[3] = receivers
for _, u in ipairs(updates) do
  if u[2] == '' then redis.call('HDEL', runs, u[1]) else redis.call('HSET', runs, u[1], u[2]) end
end

-- Retention by age: drop entries older than the TTL from the front.
local cutoff = now_ms - ttl_ms
local forgotten = seq - maxlen -- seqs at or below this are outside the MAXLEN window
while true do
  local head = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #head == 0 then break end
  local fields, ts = head[1][2], 0
  for f = 1, #fields, 2 do
    if fields[f] == 't' then ts = tonumber(fields[f + 1]) end
  end
  if ts >= cutoff then break end
  redis.call('XDEL', log, head[1][1])
  forgotten = math.max(forgotten, tonumber(string.match(head[1][1], '^(%d+)')))
end
-- Idempotency keys live as long as their events (the stream holds a contiguous range of seqs).
if forgotten > 0 then
  redis.call('ZREMRANGEBYSCORE', ids, '-inf', forgotten)
end
local ttl_s = math.ceil(ttl_ms / 1000)
for _, key in ipairs({meta, log, ids, runs}) do redis.call('EXPIRE', key, ttl_s) end
return out
