-- Herald: append a batch of events of one or more users atomically.
--
-- Its arguments, reply, stream entries and messages are encoded and decoded on the Rust side by
-- engine/redis/wire.rs (the tests there mirror what this script writes).
-- KEYS, 5 per user, hash-tagged by the user (one cluster slot; on Redis Cluster the caller sends
--   one user per call): meta (hash: epoch; seq; x = when the keys' TTLs were last refreshed and
--   the log last trimmed by age; t = seqs up to t were trimmed; rv = the version of the user's
--   run states, counted up whenever one changes, and kept from the first append on),
--   log (stream, entry id "<seq>-0", one field e = the event's record), ids (zset publisher id
--   -> seq; generated ids are not recorded), runs (hash run_id -> RunState JSON), live (zset
--   run_id -> seq of its agent_started, for the runs that are active). Not declared but in the
--   same slot: runs:<run_id> (list: an active run's events that left the stream, see compact.rs),
--   live:ended (zset run_id -> when it ended, ms: an ended run's state is kept a TTL after its
--   end, to refuse a late event, then dropped, so a user who publishes all day does not keep
--   every run it ever finished).
-- ARGV: 1 max events, 2 ttl ms, 3 PUBLISH or SPUBLISH, 4 now (the node's clock, ms),
--   5 number of users U, then per user:
--   epoch to create if the log is gone, channel,
--   "<epoch>:<rv>" the run states were validated against ("": the events touch no run),
--   number of changed runs R, R x (run_id, new state or ""),
--   number of events N, N x (publisher id or "", keyed "1"/"0", run_id of agent_started and
--   terminal events or "", kind), then the N records.
--
-- A record is built by the caller and stored as it is: it holds no seq (the stream entry's id
-- does, a message's header line gives the first, a run's list entry starts with it), so no
-- string is built here per event but the seq's. Trimming is amortized: by count once a slack of events is past the window, by age
-- when the TTLs are refreshed (readers clamp to the exact window, see read.lua and wire.rs).
--
-- The caller validated every event against the run states it knew, at a version of them. Here
-- that version is compared first, for every user (compare-and-set: one field of the meta the
-- script reads anyway, not a read per run), and every publisher id is checked: if anything
-- changed meanwhile, nothing is written and {"conflict", why} comes back, so the caller reads
-- and validates again. The epoch is part of the version, so a user's keys expiring and being
-- created again never brings an old version back.
-- Returns {"ok", lines}: one line per user, "<receivers> <first seq> <N> <rv> <epoch>\n", all in
-- one string (the node then parses one reply value per call, not five per user).
local maxlen, ttl_ms, publish = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local now_ms, nusers = tonumber(ARGV[4]), tonumber(ARGV[5])
-- Keys are kept 5/4 of the TTL after a refresh, refreshed once a quarter of the TTL has passed:
-- always at least a TTL after the user's last append, without an EXPIRE per key per call.
local keep_ms = ttl_ms + math.floor(ttl_ms / 4)
-- Events past the count window before the stream is trimmed (one XTRIM per this many events).
local slack = math.max(1, math.min(64, math.floor(maxlen / 16)))

-- `n` as a decimal string. Lua's numbers are doubles: passed to redis.call as they are, or through
-- tostring, they are printed with a floating-point format, several times slower.
local function int(n)
  return string.format('%d', n)
end

-- Field `i` of a record ("<byte length>:<bytes>" fields, see wire.rs: appended ms, id, run id,
-- kind, frame), or nil if the record is not one.
local function field(record, i)
  local p = 1
  for _ = 1, i - 1 do
    local n, at = string.match(record, '^(%d+):()', p)
    if not n then return nil end
    p = at + tonumber(n)
  end
  local n, at = string.match(record, '^(%d+):()', p)
  if not n then return nil end
  return string.sub(record, at, at + tonumber(n) - 1)
end

-- Before the stream loses its entries up to seq `last`, the events among them of active runs are
-- pushed to the runs' lists ("<seq> <record>"), so a run's whole history survives the window:
-- its list, then its events still in the stream. Only entries from the oldest active run's
-- agent_started on are read, so runs that end within the window (most) cost nothing here.
local function move_out(runs, live, log, last)
  local oldest = redis.call('ZRANGE', live, 0, 0, 'WITHSCORES')
  if #oldest == 0 or tonumber(oldest[2]) > last then return end
  local starts, lists = {}, {}
  for _, entry in ipairs(redis.call('XRANGE', log, oldest[2], last)) do
    local record = entry[2][2]
    local run = record and field(record, 3)
    if run and run ~= '' then
      if starts[run] == nil then starts[run] = tonumber(redis.call('ZSCORE', live, run)) or false end
      local s = string.match(entry[1], '^(%d+)')
      -- An event of an earlier run with the same id is not this run's.
      if starts[run] and starts[run] <= tonumber(s) then
        local list = runs .. ':' .. run
        redis.call('RPUSH', list, s .. ' ' .. record)
        lists[list] = true
      end
    end
  end
  for list in pairs(lists) do redis.call('PEXPIRE', list, keep_ms) end
end

-- Check every user's section before writing anything; remember where each section starts and
-- what its meta holds.
-- (Counts are parsed once, here: Lua parses a number from a string with strtod.)
local starts, metas, nruns_of, nev_of = {}, {}, {}, {}
local a = 6
for u = 1, nusers do
  starts[u] = a
  local k = (u - 1) * 5
  local meta = redis.call('HMGET', KEYS[k + 1], 'epoch', 'seq', 'x', 't', 'rv')
  metas[u] = meta
  if ARGV[a + 2] ~= '' and (meta[1] or '') .. ':' .. (meta[5] or '0') ~= ARGV[a + 2] then
    return {'conflict', 'runs'}
  end
  local nruns = tonumber(ARGV[a + 3])
  a = a + 4 + nruns * 2
  local nev = tonumber(ARGV[a]); a = a + 1
  nruns_of[u], nev_of[u] = nruns, nev
  for b = a, a + (nev - 1) * 4, 4 do
    if ARGV[b + 1] == '1' and redis.call('ZSCORE', KEYS[k + 3], ARGV[b]) then return {'conflict', 'id'} end
  end
  a = a + nev * 5
end

local out = {}
for u = 1, nusers do
  local k = (u - 1) * 5
  local meta_key, log, ids, runs, live = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  local a = starts[u]
  local nruns, nev = nruns_of[u], nev_of[u]
  local runs_at = a + 4
  local events = runs_at + nruns * 2 + 1
  local records = events + nev * 4

  local meta = metas[u]
  local epoch, seq = meta[1], tonumber(meta[2]) or 0
  local refreshed, trimmed = tonumber(meta[3]) or 0, tonumber(meta[4]) or 0
  -- No version: the meta was written by an earlier build or by a reader (read.lua).
  local version = tonumber(meta[5])
  local version_changed = not version
  local set -- meta fields to write besides seq, when there are any
  if not epoch then
    epoch, seq, refreshed, trimmed, version = ARGV[a], 0, 0, 0, 0
    redis.call('DEL', log, ids, runs, live, live .. ':ended')
    set = {'epoch', epoch}
  elseif not version then
    -- An earlier build's active runs have lists holding all their events so far; from now on
    -- they take what leaves the stream, like the others.
    for _, run in ipairs(redis.call('HKEYS', runs)) do
      if redis.call('EXISTS', runs .. ':' .. run) == 1 then redis.call('ZADD', live, 0, run) end
    end
    redis.call('PEXPIRE', live, keep_ms)
    version = 0
  end
  local first = seq + 1
  local ended = live .. ':ended'
  local keyed, started, finished
  for e = 0, nev - 1 do
    local b = events + e * 4
    seq = seq + 1
    redis.call('XADD', log, int(seq), 'e', ARGV[records + e])
    -- An active run is in `live` (with its first seq) from agent_started to its end; its list
    -- (engine/redis/compact.rs) takes its events as they leave the stream (move_out).
    local run_id = ARGV[b + 2]
    if run_id ~= '' then
      local kind = ARGV[b + 3]
      if kind == 'agent_started' then
        redis.call('DEL', runs .. ':' .. run_id)
        redis.call('ZADD', live, seq, run_id)
        started = true
      elseif kind == 'agent_completed' or kind == 'agent_error' or kind == 'agent_cancelled' then
        redis.call('DEL', runs .. ':' .. run_id)
        redis.call('ZREM', live, run_id)
        redis.call('ZADD', ended, now_ms, run_id)
        finished = true
      end
    end
    if ARGV[b + 1] == '1' then
      keyed = keyed or {}
      keyed[#keyed + 1] = seq
      keyed[#keyed + 1] = ARGV[b]
    end
  end
  if keyed then redis.call('ZADD', ids, unpack(keyed)) end
  for r = runs_at, runs_at + (nruns - 1) * 2, 2 do
    if ARGV[r + 1] == '' then redis.call('HDEL', runs, ARGV[r]) else redis.call('HSET', runs, ARGV[r], ARGV[r + 1]) end
  end
  -- With the TTL refresh (below), the states of runs that ended a TTL ago are dropped.
  local refresh = now_ms - refreshed >= math.floor(ttl_ms / 4)
  local forgot = false
  if refresh then
    while true do
      local gone = redis.call('ZRANGEBYSCORE', ended, '-inf', now_ms - ttl_ms, 'LIMIT', 0, 1000)
      if #gone == 0 then break end
      redis.call('HDEL', runs, unpack(gone))
      redis.call('ZREM', ended, unpack(gone))
      forgot = true
    end
  end
  if nruns > 0 or forgot then
    version = version + 1
    version_changed = true
  end
  if version_changed then
    set = set or {}
    set[#set + 1] = 'rv'
    set[#set + 1] = version
  end
  local receivers = 0
  if nev > 0 then
    -- The message: "<first seq> <count> <epoch>\n", then the records, made as one string (every
    -- string Redis's Lua makes is hashed byte by byte: no intermediate concatenation).
    local header, message = string.format('%d %d %s\n', first, nev, epoch), nil
    if nev == 1 then
      message = header .. ARGV[records]
    else
      local parts = {header}
      for r = records, records + nev - 1 do parts[#parts + 1] = ARGV[r] end
      message = table.concat(parts)
    end
    receivers = redis.call(publish, ARGV[a + 1], message)
  end

  -- Retention by count, once `slack` events are past the window.
  local forgotten = seq - maxlen -- seqs at or below this are outside the count window
  local was_trimmed = trimmed
  if forgotten - trimmed >= slack then
    move_out(runs, live, log, forgotten)
    redis.call('XTRIM', log, 'MINID', forgotten + 1)
    trimmed = forgotten
  end
  if refresh then
    -- Retention by age: the entries older than the TTL, from the front of the stream (read a
    -- page at a time; entries are in append order, so the first young one ends the search).
    local cutoff, aged, from = now_ms - ttl_ms, nil, '-'
    while true do
      local page = redis.call('XRANGE', log, from, '+', 'COUNT', 64)
      local young = #page < 64
      for _, entry in ipairs(page) do
        if (tonumber(field(entry[2][2], 1)) or 0) >= cutoff then young = true; break end
        aged = tonumber(string.match(entry[1], '^(%d+)'))
      end
      if young then break end
      from = '(' .. page[#page][1]
    end
    if aged then
      move_out(runs, live, log, aged)
      redis.call('XTRIM', log, 'MINID', aged + 1)
      trimmed = math.max(trimmed, aged)
    end
    set = set or {}
    set[#set + 1] = 'x'
    set[#set + 1] = now_ms
    for _, key in ipairs({meta_key, log, ids, runs, live, ended}) do redis.call('PEXPIRE', key, keep_ms) end
    -- A run's list lives as long as the user's keys while the run is active.
    for _, run_id in ipairs(redis.call('HKEYS', runs)) do
      redis.call('PEXPIRE', runs .. ':' .. run_id, keep_ms)
    end
  else
    -- A key created since the last refresh gets its first TTL now.
    if keyed then redis.call('PEXPIRE', ids, keep_ms, 'NX') end
    if nruns > 0 then redis.call('PEXPIRE', runs, keep_ms, 'NX') end
    if started then redis.call('PEXPIRE', live, keep_ms, 'NX') end
    if finished then redis.call('PEXPIRE', ended, keep_ms, 'NX') end
  end
  -- Idempotency keys live as long as their events (the stream holds a contiguous range of seqs).
  if trimmed > was_trimmed then
    redis.call('ZREMRANGEBYSCORE', ids, '-inf', trimmed)
    set = set or {}
    set[#set + 1] = 't'
    set[#set + 1] = trimmed
  end
  if set then
    redis.call('HSET', meta_key, 'seq', int(seq), unpack(set))
  else
    redis.call('HSET', meta_key, 'seq', int(seq))
  end
  out[u] = string.format('%d %d %d %d %s\n', receivers, first, nev, version, epoch)
end
return {'ok', table.concat(out)}
