"""The slot line's Lua scripts: each decision the limiter makes is one script, so two
workers never both take the last slot. Used by ``worker.limiter.AccountLimiter`` only;
the key layout is described there (and named in ``t2v_core.names``).
"""

# ARGV[1] is "now" when the caller passes a clock, else "" and Redis's TIME is used, so
# hosts with skewed clocks agree on lease expiry.
_NOW = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function limit_now(state, configured)
  local e = tonumber(redis.call('HGET', state, 'effective'))
  if e == nil then return configured end
  -- Once retry_after has passed, probe one slot more, and one more per retry_after: the
  -- limit grows back even while nothing is accepted (a render we hold may never end).
  local quiet = tonumber(redis.call('HGET', state, 'quiet_until')) or 0
  if now >= quiet then
    local step = tonumber(redis.call('HGET', state, 'step')) or 30
    e = e + 1 + math.floor((now - quiet) / step)
  end
  if e > configured then e = configured end
  e = math.floor(e)
  if e < 1 then e = 1 end
  return e
end
"""

# KEYS: holders, waiting, ready, state. ARGV: now, job, lease, limit, created (a string).
_ACQUIRE = (
    _NOW
    + """
local holders, waiting, ready, state = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job, lease, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', ready) == 0 then return -1 end
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
if redis.call('ZSCORE', holders, job) then
  -- Already ours (a second copy of the message): never shorten a longer hold, such as
  -- the one a submitted render holds until its deadline.
  redis.call('ZADD', holders, 'GT', now + lease, job)
  redis.call('ZREM', waiting, job)
  return 1
end
-- Oldest first: join the line (keeping an earlier place), then take a slot only if fewer
-- jobs stand ahead than there are free slots. The score goes to Redis as the caller's
-- string, never through a Lua number.
redis.call('ZADD', waiting, 'NX', ARGV[5], job)
local ahead = redis.call('ZRANK', waiting, job)
local free = limit_now(state, limit) - redis.call('ZCARD', holders)
if free > 0 and ahead < free then
  redis.call('ZADD', holders, now + lease, job)
  redis.call('ZREM', waiting, job)
  return 1
end
return 0
"""
)

# KEYS: holders, waiting, ready, state. ARGV: now, job ("" for none), limit.
_RELEASE = (
    _NOW
    + """
local holders, waiting, ready, state = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job, limit = ARGV[2], tonumber(ARGV[3])
if job ~= '' then
  redis.call('ZREM', holders, job)
  redis.call('ZREM', waiting, job)
end
if redis.call('EXISTS', ready) == 0 then return {} end
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
local free = limit_now(state, limit) - redis.call('ZCARD', holders)
if free <= 0 then return {} end
-- Who should go next; they stay in line until their own acquire takes the slot.
return redis.call('ZRANGE', waiting, 0, free - 1)
"""
)

# KEYS: holders, waiting, ready, state. ARGV: now, job, lease, limit. Stretch (or shorten)
# the slot ``job`` holds; a job whose render is already running at the provider and whose
# slot lapsed (a crash between two writes) takes a free one back: the provider counts it
# either way. Never past the limit. 1 if held now.
_HOLD = (
    _NOW
    + """
local holders, waiting, ready, state = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job, lease, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
if redis.call('ZSCORE', holders, job) then
  redis.call('ZADD', holders, now + lease, job)
  return 1
end
if redis.call('EXISTS', ready) == 0 then
  -- The line is being rebuilt from the table, which may still show this job as before
  -- its answer: record the render's hold now; the rebuild keeps the longer one (GT).
  redis.call('ZADD', holders, 'GT', now + lease, job)
  return 1
end
if redis.call('ZCARD', holders) < limit_now(state, limit) then
  redis.call('ZADD', holders, now + lease, job)
  redis.call('ZREM', waiting, job)
  return 1
end
return 0
"""
)

# KEYS: holders. ARGV: now, job. 1 if ``job`` holds a slot that has not lapsed.
_HOLDS = (
    _NOW
    + """
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
if score and score > now then return 1 end
return 0
"""
)

_HOLDERS = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)

# KEYS: holders, state. ARGV: now, job, provider max (or ""), retry_after, configured.
# The provider refused ``job`` as over its queue limit: give the slot back, and if we held
# fewer than the provider's maximum, someone else uses the key: use what it accepted.
_QUEUE_FULL = (
    _NOW
    + """
local holders, state = KEYS[1], KEYS[2]
local job, pmax, wait, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREM', holders, job)
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
local held = redis.call('ZCARD', holders)
local eff = limit_now(state, limit)
if wait < 1 then wait = 1 end
if pmax and pmax < eff then eff = pmax end
if held < eff then eff = held end
if eff < 1 then eff = 1 end
redis.call('HSET', state, 'effective', eff, 'last_429_at', now, 'quiet_until', now + wait,
  'held_at_429', held, 'step', wait)
if pmax then redis.call('HSET', state, 'provider_max', pmax) end
redis.call('HINCRBY', state, 'queue_full_429s', 1)
return tostring(eff)
"""
)

# KEYS: state. ARGV: now, configured. An accepted submit: grow the limit back by 1/limit.
# Returns 1 when the whole number of slots grew (the caller wakes the line).
_ACCEPTED = (
    _NOW
    + """
local state, limit = KEYS[1], tonumber(ARGV[2])
local e = tonumber(redis.call('HGET', state, 'effective'))
if e == nil then return 0 end
local quiet = tonumber(redis.call('HGET', state, 'quiet_until')) or 0
if now < quiet then return 0 end
local before = math.floor(e)
e = e + 1 / math.max(e, 1)
if e >= limit then
  redis.call('HDEL', state, 'effective')
  return before < limit and 1 or 0
end
redis.call('HSET', state, 'effective', tostring(e))
return math.floor(e) > before and 1 or 0
"""
)


_LIMIT_NOW = (
    _NOW
    + """
return limit_now(KEYS[1], tonumber(ARGV[2]))
"""
)
