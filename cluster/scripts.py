"""The Lua scripts of cluster mode: each is one atomic step that several replicas may race for."""

from __future__ import annotations

# KEYS: lease key. ARGV: replica id, ttl ms. 1 = held by us (taken or renewed), 0 = someone else holds it.
ACQUIRE_OR_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease key. ARGV: replica id, ttl ms. Extends the lease only while we hold it: a renewal read before a
# give-back must not take the freed lease up again (it would go back to its giver, not to the taker it was freed for).
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease key, its "given back" marker. ARGV: replica id, ttl ms. Deletes the lease only if we still
# hold it, and marks it given back so another replica takes it at once (not after a TTL of silence).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: a ViewComfy task's adoption claim. ARGV: this replica's incarnation, the alive-key prefix, the incarnation
# that drove the task (its record's), claim ttl s. Whoever drives the task now is the claim's holder, else the
# record's driver; 1 = the task is ours now, because that driver's alive key is gone (it stopped renewing it), or
# it is us (an adoption cut short by a Redis error: the caller only asks about tasks it does not drive).
# Two survivors never both win: the first one's claim names a live driver to the second.
ADOPT = """
local driver = redis.call('GET', KEYS[1]) or ARGV[3]
if driver ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. driver) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
return 1
"""

# KEYS: load hash. ARGV: limit (0 = none), then candidate backends in tie-break order.
# The least loaded candidate below the limit gets +1 and is returned; nil when none has room.
# (ARGV[first..last]: the candidates.)
_PICK = """
local best, best_load = nil, nil
for i = first, last do
  local load = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if (limit <= 0 or load < limit) and (best == nil or load < best_load) then
    best, best_load = ARGV[i], load
  end
end
if best then redis.call('HINCRBY', KEYS[1], best, 1) end
"""
CHOOSE = "local limit, first, last = tonumber(ARGV[1]), 2, #ARGV\n" + _PICK + "return best\n"

# A write about a task on a backend carries a fence: the lease key of the task's backend and the writer's id.
# It is dropped when another replica holds that lease (a stalled owner's late writes must not undo its
# successor's), or when the writer gave that lease back (its successor may not have taken it yet); a missing
# lease otherwise (it expired, Redis restarted) lets it through.
# (A: the script's arguments, ARGV unless the script is a part of a bigger one.)
FENCE = """
if A[#A - 1] ~= '' then
  local holder = redis.call('GET', A[#A - 1])
  if holder and holder ~= A[#A] then return false end
  if not holder and redis.call('GET', A[#A - 1] .. ':free') == A[#A] then return false end
end
"""

# K: task hash, tasks zset, unfinished set, prompt hash, events stream.
# A: task id, created_at, final (0/1), record JSON, workflow JSON ('' = keep), prompt id, old prompt id
# ('' = none), events maxlen, fence key, fence holder. Stores the record (_STORE) and tells every replica (_TELL:
# a "rec" entry on the stream).
_STORE = """
redis.call('HSET', K[1], 'r', A[4])
if A[5] ~= '' then redis.call('HSET', K[1], 'w', A[5]) end
redis.call('ZADD', K[2], A[2], A[1])
if A[3] == '1' then redis.call('SREM', K[3], A[1]) else redis.call('SADD', K[3], A[1]) end
if A[7] ~= '' and A[7] ~= A[6] then redis.call('HDEL', K[4], A[7]) end
redis.call('HSET', K[4], A[6], A[1])
"""
_TELL_CALL = "redis.call('XADD', K[5], 'MAXLEN', '~', A[8], '*', 't', A[1], 'k', 'rec', 'd', A[4])\n"
_TELL = "return " + _TELL_CALL
_SAVE = _STORE + _TELL
_ARGS = "local K, A = KEYS, ARGV\n"
SAVE_TASK = _ARGS + FENCE + _SAVE
# SAVE_TASK's keys and arguments, _TELL alone (fenced): the "rec" entry of a record CHOOSE_SAVE stored untold.
TELL_TASK = _ARGS + FENCE + _TELL

# SAVE_TASK's keys and arguments, and KEYS[6]: the shared queue. Takes the task out of the queue and stores it
# as handed to its backend, in one step (a crash in between would leave it in neither); false when the fence
# refuses or another replica took it first.
TAKE_TASK = (
    _ARGS
    + FENCE
    + """
if redis.call('ZREM', K[6], A[1]) == 0 then return false end
"""
    + _SAVE
)

# KEYS: events stream, the task's own stream. ARGV: task id ('' = for everyone), kind, text, events maxlen,
# per-task maxlen, per-task ttl s, keep in the task's stream (1/0), conflation key and status ('' = none:
# the hub's, read from the message's dict once, so no reader decodes the text again), fence key, fence
# holder. Same id in both streams, so an SSE Last-Event-ID read on one replica resumes on another from the
# task's stream.
PUBLISH = (
    _ARGS
    + FENCE
    + """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 't', ARGV[1], 'k', ARGV[2], 'd', ARGV[3],
  'c', ARGV[8], 's', ARGV[9])
if ARGV[1] ~= '' and ARGV[7] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], id, 'k', ARGV[2], 'd', ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
return id
"""
)

# KEYS: tasks zset, unfinished set, prompt hash. ARGV: how many to keep, key prefix.
# Drops the oldest finished tasks beyond the limit (unfinished ones are never dropped).
TRIM = """
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return 0 end
local dropped = 0
local ids = redis.call('ZRANGE', KEYS[1], 0, excess + 100)
for _, id in ipairs(ids) do
  if dropped >= excess then break end
  if redis.call('SISMEMBER', KEYS[2], id) == 0 then
    local rec = redis.call('HGET', ARGV[2] .. 'task:' .. id, 'r')
    if rec then
      local ok, body = pcall(cjson.decode, rec)
      if ok and body['prompt_id'] and redis.call('HGET', KEYS[3], body['prompt_id']) == id then
        redis.call('HDEL', KEYS[3], body['prompt_id'])
      end
    end
    redis.call('DEL', ARGV[2] .. 'task:' .. id, ARGV[2] .. 'ev:' .. id)
    redis.call('ZREM', KEYS[1], id)
    dropped = dropped + 1
  end
end
return dropped
"""


# CHOOSE, and when the choice falls on ARGV[3 + n] (the backend this replica would post to itself) SAVE_TASK in
# the same step: one round trip before the post instead of two. KEYS: the load hash, then SAVE_TASK's keys.
# ARGV: limit, n, n candidates, that backend, then SAVE_TASK's arguments (its record names that backend).
# {choice} when it fell elsewhere (nothing stored), {choice, 1 or nil (the fence refused)}, or nil. The record's
# "rec" entry is not added here (TELL_TASK follows, through the writer): it would wake every replica's stream
# reader, this one's too, in the middle of the submission's round trip (issue 14's latency; BENCHMARKS.md).
CHOOSE_SAVE = (
    "local limit, n = tonumber(ARGV[1]), tonumber(ARGV[2])\nlocal first, last = 3, 2 + n\n"
    + _PICK
    + """
if not best then return false end
if best ~= ARGV[3 + n] then return {best} end
local K = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}
local A = {unpack(ARGV, 4 + n)}
local saved = (function()
"""
    + FENCE
    + _STORE
    + """
return 1
end)()
return {best, saved}
"""
)


# CHOOSE for a replica that owns none of the candidates, with what _forward then stored in the same step: the
# task's record (unfenced: the owner's to post), naming the choice, and the note in the owner's inbox. One round
# trip instead of two before the owner hears of the task. KEYS: the load hash, then SAVE_TASK's keys. ARGV: limit,
# n, n candidates, SAVE_TASK's arguments (the record holding a placeholder where the choice goes: a random hex
# token, safe as a Lua pattern), the placeholder, the inbox key prefix, the note. The choice, or nil.
CHOOSE_FORWARD = (
    "local limit, n = tonumber(ARGV[1]), tonumber(ARGV[2])\nlocal first, last = 3, 2 + n\n"
    + _PICK
    + """
if not best then return false end
local K = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}
local A = {unpack(ARGV, 3 + n, #ARGV - 3)}
local placeholder, inbox, note = ARGV[#ARGV - 2], ARGV[#ARGV - 1], ARGV[#ARGV]
A[4] = string.gsub(A[4], placeholder, (string.gsub(best, '%%', '%%%%')))
"""
    + _STORE
    + _TELL_CALL
    + """redis.call('RPUSH', inbox .. best, note)
return best
"""
)


# KEYS: an asset blob's references (a hash: asset id → 1), its "being deleted" marker. ARGV: asset id. A new record
# over the blob counts once no deletion of it is under way (0: retry shortly), so a blob is never removed from the
# store after a record that needs it was counted.
ASSET_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 1)
return 1
"""

# KEYS: the asset's record, its blob's references, the blob's "being deleted" marker. ARGV: asset id, marker ttl ms.
# Forgets the record: {whether it existed, whether it was the blob's last} (last: the marker is set; the caller
# deletes the blob, then the marker).
ASSET_RELEASE = """
local existed = redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HLEN', KEYS[2]) > 0 then return {existed, 0} end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return {existed, 1}
"""
