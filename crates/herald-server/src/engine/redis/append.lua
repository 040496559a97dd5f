-- Herald: append a batch of events of one or more users atomically.
--
-- Its arguments, reply, stream entries and messages are encoded and decoded on the Rust side by
-- engine/redis/wire.rs (the tests there mirror what this script writes).
-- KEYS, 4 per user, hash-tagged by the user (one cluster slot; on Redis Cluster the caller sends
--   one user per call): meta (hash: epoch; seq; x = when the keys' TTLs were last refreshed and
--   the log last trimmed by age; t = seqs up to t were trimmed by count), log (stream, entry id
--   "<seq>-0", one field e = the event's record), ids (zset publisher id -> seq; generated ids
--   are not recorded), runs (hash run_id -> RunState JSON). Not declared but in the same slot:
--   runs:<run_id> (list of an active run's events, see compact.rs).
-- ARGV: 1 max events, 2 ttl ms, 3 PUBLISH or SPUBLISH, 4 now (the node's clock, ms),
--   5 number of users U, then per user:
--   epoch to create if the log is gone, channel,
--   number of runs R, R x (run_id, state validated against or "", new state or ""),
--   number of events N, N x (id, keyed "1"/"0", run_id or "", kind), then the N records.
--
-- A record is built by the caller and stored as it is: it holds no seq (the stream entry's id
-- does; a message or a run's list puts it in front), so no string is built here per event but
-- the seq's. Trimming is amortized: by count once a slack of events is past the window, by age
-- when the TTLs are refreshed (readers clamp to the exact window, see read.lua and wire.rs).
--
-- The caller validated every event against the run states it knew. Here those are compared
-- first, for every user (compare-and-set), and every publisher id is checked: if anything
-- changed meanwhile, nothing is written and {"conflict", why} comes back, so the caller reads
-- and validates again.
-- Returns {"ok", then per user: epoch, receivers, first seq, N}.
local maxlen, ttl_ms, publish = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local now_ms, nusers = tonumber(ARGV[4]), tonumber(ARGV[5])
-- Keys are kept 5/4 of the TTL after a refresh, refreshed once a quarter of the TTL has passed:
-- always at least a TTL after the user's last append, without an EXPIRE per key per call.
local keep_ms = ttl_ms + math.floor(ttl_ms / 4)
-- Events past the count window before the stream is trimmed (one XTRIM per this many events).
local slack = math.max(1, math.min(64, math.floor(maxlen / 16)))

-- Parse every user's section and check it before writing anything.
local users = {}
local a = 6
for u = 1, nusers do
  local k = (u - 1) * 4
  local user = {meta = KEYS[k + 1], log = KEYS[k + 2], ids = KEYS[k + 3], runs = KEYS[k + 4],
                epoch = ARGV[a], channel = ARGV[a + 1], updates = {}}
  local nruns = tonumber(ARGV[a + 2]); a = a + 3
  for _ = 1, nruns do
    local run_id, expected, new = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    a = a + 3
    if (redis.call('HGET', user.runs, run_id) or '') ~= expected then return {'conflict', 'run ' .. run_id} end
    if new ~= expected then user.updates[#user.updates + 1] = {run_id, new} end
  end
  user.nev = tonumber(ARGV[a]); a = a + 1
  user.first = a
  for e = 0, user.nev - 1 do
    local b = a + e * 4
    if ARGV[b + 1] == '1' and redis.call('ZSCORE', user.ids, ARGV[b]) then return {'conflict', 'id'} end
  end
  a = a + user.nev * 5
  users[u] = user
end

local out = {'ok'}
for _, user in ipairs(users) do
  local meta = redis.call('HMGET', user.meta, 'epoch', 'seq', 'x', 't')
  local epoch, seq = meta[1], tonumber(meta[2]) or 0
  local refreshed, trimmed = tonumber(meta[3]) or 0, tonumber(meta[4]) or 0
  local set = {}
  if not epoch then
    epoch, seq, refreshed, trimmed = user.epoch, 0, 0, 0
    redis.call('DEL', user.log, user.ids, user.runs)
    set = {'epoch', epoch}
  end
  local first = seq + 1
  local records = user.first + user.nev * 4
  local keyed = {}
  for e = 0, user.nev - 1 do
    local b = user.first + e * 4
    local record = ARGV[records + e]
    seq = seq + 1
    local s = tostring(seq)
    redis.call('XADD', user.log, s, 'e', record)
    -- The events of each active run, for its compacted state (engine/redis/compact.rs): the
    -- run's list starts with agent_started, takes its later events while it exists, ends with
    -- the run. An entry is the event's seq, a space and its record.
    local run_id, kind = ARGV[b + 2], ARGV[b + 3]
    if run_id ~= '' then
      local list = user.runs .. ':' .. run_id
      if kind == 'agent_started' then
        redis.call('DEL', list)
        redis.call('RPUSH', list, s .. ' ' .. record)
        redis.call('PEXPIRE', list, keep_ms)
      elseif kind == 'agent_completed' or kind == 'agent_error' or kind == 'agent_cancelled' then
        redis.call('DEL', list)
      else
        redis.call('RPUSHX', list, s .. ' ' .. record)
      end
    end
    if ARGV[b + 1] == '1' then
      keyed[#keyed + 1] = seq
      keyed[#keyed + 1] = ARGV[b]
    end
  end
  if #keyed > 0 then redis.call('ZADD', user.ids, unpack(keyed)) end
  for _, u in ipairs(user.updates) do
    if u[2] == '' then redis.call('HDEL', user.runs, u[1]) else redis.call('HSET', user.runs, u[1], u[2]) end
  end
  local receivers = 0
  if user.nev > 0 then
    -- The message: "<first seq> <count> <epoch>\n", then the records.
    receivers = redis.call(publish, user.channel, string.format('%d %d %s\n', first, user.nev, epoch)
      .. table.concat(ARGV, '', records, records + user.nev - 1))
  end

  -- Retention by count, once `slack` events are past the window.
  local forgotten = seq - maxlen -- seqs at or below this are outside the count window
  local was_trimmed = trimmed
  if forgotten - trimmed >= slack then
    redis.call('XTRIM', user.log, 'MINID', forgotten + 1)
    trimmed = forgotten
  end
  set[#set + 1] = 'seq'
  set[#set + 1] = seq
  if now_ms - refreshed >= math.floor(ttl_ms / 4) then
    -- Retention by age, from the front of the stream.
    local cutoff = now_ms - ttl_ms
    while true do
      local head = redis.call('XRANGE', user.log, '-', '+', 'COUNT', 1)
      if #head == 0 then break end
      if tonumber(string.match(head[1][2][2], '^%d+:(%d+)')) >= cutoff then break end
      redis.call('XDEL', user.log, head[1][1])
      trimmed = math.max(trimmed, tonumber(string.match(head[1][1], '^(%d+)')))
    end
    set[#set + 1] = 'x'
    set[#set + 1] = now_ms
    for _, key in ipairs({user.meta, user.log, user.ids, user.runs}) do redis.call('PEXPIRE', key, keep_ms) end
    -- A run's list lives as long as the user's keys while the run is active.
    for _, run_id in ipairs(redis.call('HKEYS', user.runs)) do
      redis.call('PEXPIRE', user.runs .. ':' .. run_id, keep_ms)
    end
  else
    -- A key created since the last refresh gets its first TTL now.
    if #keyed > 0 then redis.call('PEXPIRE', user.ids, keep_ms, 'NX') end
    if #user.updates > 0 then redis.call('PEXPIRE', user.runs, keep_ms, 'NX') end
  end
  -- Idempotency keys live as long as their events (the stream holds a contiguous range of seqs).
  if trimmed > was_trimmed then
    redis.call('ZREMRANGEBYSCORE', user.ids, '-inf', trimmed)
    set[#set + 1] = 't'
    set[#set + 1] = trimmed
  end
  redis.call('HSET', user.meta, unpack(set))
  out[#out + 1] = epoch
  out[#out + 1] = receivers
  out[#out + 1] = first
  out[#out + 1] = user.nev
end
return out
