-- Herald: append a batch of events of one or more users atomically.
--
-- KEYS, 4 per user: meta (hash: epoch, seq), log (stream, id "<seq>-0"), ids (zset id -> seq),
--   runs (hash run_id -> RunState JSON). A user's four keys are hash-tagged by the user (one
--   cluster slot); on Redis Cluster the caller sends one user per call.
-- ARGV: 1 max events, 2 ttl ms, 3 number of users U, then per user:
--   epoch to create if the log is gone, pub/sub channel,
--   number of runs R, R x (run_id, expected state or "", new state or ""),
--   number of events N, N x (id, run_id or "", kind, frame after its seq).
--
-- The caller validated every event against the run states it read. Here those states and the
-- ids are compared first, for every user (compare-and-set): if any changed meanwhile, nothing is
-- written and {"conflict", why} comes back, so the caller reads and validates again.
-- Returns {"ok", then per user: epoch, receivers, N, seq1, ..., seqN}.
local maxlen, ttl_ms, nusers = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl_s = math.ceil(ttl_ms / 1000)

-- Parse every user's section and check it before writing anything.
local users = {}
local a = 4
for u = 1, nusers do
  local k = (u - 1) * 4
  local user = {meta = KEYS[k + 1], log = KEYS[k + 2], ids = KEYS[k + 3], runs = KEYS[k + 4],
                epoch = ARGV[a], channel = ARGV[a + 1], updates = {}}
  local nruns = tonumber(ARGV[a + 2]); a = a + 3
  for _ = 1, nruns do
    local run_id, expected, new = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    a = a + 3
    if (redis.call('HGET', user.runs, run_id) or '') ~= expected then return {'conflict', 'run ' .. run_id} end
    user.updates[#user.updates + 1] = {run_id, new}
  end
  user.nev = tonumber(ARGV[a]); a = a + 1
  user.first = a
  for e = 0, user.nev - 1 do
    if redis.call('ZSCORE', user.ids, ARGV[a + e * 4]) then return {'conflict', 'id'} end
  end
  a = a + user.nev * 4
  users[u] = user
end

local out = {'ok'}
for _, user in ipairs(users) do
  local epoch = redis.call('HGET', user.meta, 'epoch')
  if not epoch then
    epoch = user.epoch
    redis.call('DEL', user.log, user.ids, user.runs)
    redis.call('HSET', user.meta, 'epoch', epoch, 'seq', 0)
  end
  local receivers, seq, seqs = 0, 0, {}
  for e = 0, user.nev - 1 do
    local b = user.first + e * 4
    local id, run_id, kind, rest = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
    seq = redis.call('HINCRBY', user.meta, 'seq', 1)
    local frame = '{"type":"event","seq":' .. seq .. rest
    redis.call('XADD', user.log, 'MAXLEN', maxlen, seq .. '-0', 'f', frame, 'i', id, 'r', run_id, 'k', kind, 't', now_ms)
    redis.call('ZADD', user.ids, seq, id)
    receivers = redis.call('PUBLISH', user.channel,
      epoch .. '\n' .. seq .. '\n' .. now_ms .. '\n' .. id .. '\n' .. run_id .. '\n' .. kind .. '\n' .. frame)
    seqs[#seqs + 1] = seq
  end
  for _, u in ipairs(user.updates) do
    if u[2] == '' then redis.call('HDEL', user.runs, u[1]) else redis.call('HSET', user.runs, u[1], u[2]) end
  end
  -- Retention by age: drop entries older than the TTL from the front.
  local cutoff = now_ms - ttl_ms
  local forgotten = seq - maxlen -- seqs at or below this are outside the MAXLEN window
  while true do
    local head = redis.call('XRANGE', user.log, '-', '+', 'COUNT', 1)
    if #head == 0 then break end
    local fields, ts = head[1][2], 0
    for f = 1, #fields, 2 do
      if fields[f] == 't' then ts = tonumber(fields[f + 1]) end
    end
    if ts >= cutoff then break end
    redis.call('XDEL', user.log, head[1][1])
    forgotten = math.max(forgotten, tonumber(string.match(head[1][1], '^(%d+)')))
  end
  -- Idempotency keys live as long as their events (the stream holds a contiguous range of seqs).
  if forgotten > 0 then
    redis.call('ZREMRANGEBYSCORE', user.ids, '-inf', forgotten)
  end
  for _, key in ipairs({user.meta, user.log, user.ids, user.runs}) do redis.call('EXPIRE', key, ttl_s) end
  out[#out + 1] = epoch
  out[#out + 1] = receivers
  out[#out + 1] = #seqs
  for _, s in ipairs(seqs) do out[#out + 1] = s end
end
return out
