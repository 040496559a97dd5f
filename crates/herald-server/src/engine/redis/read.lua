-- Herald: read a user's log atomically (a script, so Redis Cluster routes it by key and follows
-- MOVED/ASK like any single-key command; a MULTI pipeline would not).
--
-- Decoded by engine/redis/wire.rs (decode_read).
-- KEYS: meta, log (see append.lua).
-- ARGV: 1 after seq, 2 limit (0: no limit), 3 epoch to create the log with ("": read only),
--   4 ms to keep a created or opened log's meta, 5 most events kept per user.
-- The append script trims the stream by count only once a few events are past the window; here
-- the window is exact: nothing older than the last ARGV[5] seqs is the oldest or read. (Age is
-- clamped by the caller, which decodes each record's time.)
-- Returns {epoch or "", seq, oldest retained seq (seq + 1: none), XRANGE of the entries after ARGV[1]}.
local meta, log = KEYS[1], KEYS[2]
local after, limit, create, keep_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local maxlen = tonumber(ARGV[5])
if create ~= '' then
  redis.call('HSETNX', meta, 'epoch', create)
  redis.call('HSETNX', meta, 'seq', 0)
  redis.call('PEXPIRE', meta, keep_ms)
end
local m = redis.call('HMGET', meta, 'epoch', 'seq')
local seq = tonumber(m[2]) or 0
local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
-- With nothing retained (trimmed, or the stream expired before the meta), every seq up to the
-- head is gone: the oldest retained is the next one.
local first = seq + 1
if #oldest > 0 then
  first = math.max(tonumber(string.match(oldest[1][1], '^(%d+)')), seq - maxlen + 1)
  after = math.max(after, first - 1)
end
local range
if limit > 0 then
  range = redis.call('XRANGE', log, (after + 1) .. '-0', '+', 'COUNT', limit)
else
  range = redis.call('XRANGE', log, (after + 1) .. '-0', '+')
end
return {m[1] or '', seq, first, range}
