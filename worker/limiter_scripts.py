"""The slot line's Lua scripts: each decision the limiter makes is one script, so two
workers never both take the last slot; and how their answers are read. Used by
``worker.limiter.AccountLimiter`` only; the key layout is described there (and named in
``t2v_core.names``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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

# The line's shared Lua (needs _NOW first). KEYS of every line script: holders, waiting,
# ready, state, flows, flowof, fair (``AccountLimiter._line``).
_LINE = (
    _NOW
    + """
-- The line (see worker.limiter): ``waiting`` ZSET job -> created (all waiting jobs), one FIFO
-- per flow ``{fair}:{flow}`` (job -> created), ``flows`` ZSET flow -> virtual tag of its
-- first job, ``flowof`` HASH job -> flow, ``fair`` HASH V (the line's virtual time: the
-- tag last served), c:{flow} (what one slot costs the flow), l:{flow} (its last tag once
-- it emptied). Tags go to Redis as %.17g strings, never through Lua's 14-digit tostring.
local L = {holders = KEYS[1], waiting = KEYS[2], ready = KEYS[3], state = KEYS[4],
  flows = KEYS[5], flowof = KEYS[6], fair = KEYS[7]}
local function fmt(x) return string.format('%.17g', x) end
local function flow_key(flow) return L.fair .. ':' .. flow end
local function vnow() return tonumber(redis.call('HGET', L.fair, 'V')) or 0 end
-- Join the line (a job already in it keeps its place); a flow that was empty gets the tag
-- max(V, its last tag) + cost: no credit saved up while idle, no debt forgiven.
local function join(job, flow, cost, created)
  local known = redis.call('HGET', L.flowof, job)
  if known then return known end
  redis.call('ZADD', L.waiting, 'NX', created, job)
  redis.call('HSET', L.flowof, job, flow)
  redis.call('HSET', L.fair, 'c:' .. flow, cost)
  redis.call('ZADD', flow_key(flow), created, job)
  if not redis.call('ZSCORE', L.flows, flow) then
    local start = tonumber(redis.call('HGET', L.fair, 'l:' .. flow)) or 0
    local v = vnow()
    if start < v then start = v end
    redis.call('ZADD', L.flows, fmt(start + tonumber(cost)), flow)
  end
  return flow
end
-- Leave the line; ``served``: the job took a slot, its flow pays one slot's cost and the
-- line's virtual time moves to the tag served.
local function out(job, served)
  redis.call('ZREM', L.waiting, job)
  local flow = redis.call('HGET', L.flowof, job)
  if not flow then return end
  redis.call('HDEL', L.flowof, job)
  local fk = flow_key(flow)
  redis.call('ZREM', fk, job)
  local head = tonumber(redis.call('ZSCORE', L.flows, flow))
  if not head then return end
  local cost = tonumber(redis.call('HGET', L.fair, 'c:' .. flow)) or 1
  if served then
    if head > vnow() then redis.call('HSET', L.fair, 'V', fmt(head)) end
    head = head + cost
  end
  if redis.call('ZCARD', fk) == 0 then
    redis.call('ZREM', L.flows, flow)
    redis.call('HSET', L.fair, 'l:' .. flow, fmt(head - cost))
  elseif served then
    redis.call('ZADD', L.flows, fmt(head), flow)
  end
end
-- The first k jobs of the fair order: flow f's i-th job (oldest first) has the tag
-- head(f) + i * cost(f); smallest tag first, ties by flow name. Only the k flows with the
-- smallest heads can place a job among the first k, and each at most k jobs.
local function first_k(k)
  local found = {}
  if k <= 0 then return found end
  local fl = redis.call('ZRANGE', L.flows, 0, k - 1, 'WITHSCORES')
  local heads = {}
  for i = 1, #fl, 2 do
    local f = fl[i]
    heads[#heads + 1] = {f = f, tag = tonumber(fl[i + 1]), i = 1,
      cost = tonumber(redis.call('HGET', L.fair, 'c:' .. f)) or 1,
      m = redis.call('ZRANGE', flow_key(f), 0, k - 1)}
  end
  while #found < k do
    local best = nil
    for _, h in ipairs(heads) do
      if h.i <= #h.m then
        if best == nil or h.tag < best.tag or (h.tag == best.tag and h.f < best.f) then
          best = h
        end
      end
    end
    if best == nil then break end
    found[#found + 1] = best.m[best.i]
    best.i = best.i + 1
    best.tag = best.tag + best.cost
  end
  return found
end
local function free_slots(limit)
  redis.call('ZREMRANGEBYSCORE', L.holders, '-inf', now)
  return limit_now(L.state, limit) - redis.call('ZCARD', L.holders)
end
"""
)

# ARGV: now, job, lease, limit, created, flow, cost (strings). 1 taken, 0 waits, -1 lost.
_ACQUIRE = (
    _LINE
    + """
local job, lease, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', L.ready) == 0 then return -1 end
redis.call('ZREMRANGEBYSCORE', L.holders, '-inf', now)
if redis.call('ZSCORE', L.holders, job) then
  -- Already ours (a second copy of the message): never shorten a longer hold, such as
  -- the one a submitted render holds until its deadline.
  redis.call('ZADD', L.holders, 'GT', now + lease, job)
  out(job, false)
  return 1
end
-- Join the line (keeping an earlier place), then take a slot only if the job is among the
-- first ``free`` of the fair order: nobody the order puts later takes an earlier turn.
join(job, ARGV[6], ARGV[7], ARGV[5])
for _, j in ipairs(first_k(free_slots(limit))) do
  if j == job then
    redis.call('ZADD', L.holders, now + lease, job)
    out(job, true)
    return 1
  end
end
return 0
"""
)

# ARGV: now, job ("" for none), limit, keep ("1": leave the line but keep the slot).
# With a job: the jobs this release brought among the first ``free`` of the fair order (a
# slot freed, a lease lapsed, a place given up), never those already among them: they were
# named when they got there, and naming them again for every release (every second copy of
# a message) multiplied the wakes. Without ("", the explicit wake of reconcile and of a
# rebuild): all of the first ``free``, whose wakes may have been lost.
_RELEASE = (
    _LINE
    + """
local job, limit = ARGV[2], tonumber(ARGV[3])
local ready = redis.call('EXISTS', L.ready) == 1
if job == '' then
  if not ready then return {} end
  return first_k(free_slots(limit))
end
-- Who fits before (a lapsed lease still counted as held, so that the release that finds
-- it lapsed wakes the job it lets in); they stay in line until their acquire takes a slot.
local before = {}
if ready then
  local held = redis.call('ZCARD', L.holders)
  for _, j in ipairs(first_k(limit_now(L.state, limit) - held)) do before[j] = true end
end
if ARGV[4] ~= '1' then redis.call('ZREM', L.holders, job) end
out(job, false)
if not ready then return {} end
local new = {}
for _, j in ipairs(first_k(free_slots(limit))) do
  if not before[j] then new[#new + 1] = j end
end
return new
"""
)

# ARGV: now, job. Drop ``job``'s slot and place in line without waking anyone.
_FORGET = (
    _LINE
    + """
redis.call('ZREM', L.holders, ARGV[2])
out(ARGV[2], false)
return 1
"""
)

# ARGV: now, k. The first k jobs of the fair order (a read).
_NEXT = (
    _LINE
    + """
return first_k(tonumber(ARGV[2]))
"""
)

# ARGV: now, then (job, created, flow, cost) per waiter: join them all (a rebuild).
_JOIN_MANY = (
    _LINE
    + """
for i = 2, #ARGV, 4 do join(ARGV[i], ARGV[i + 2], ARGV[i + 3], ARGV[i + 1]) end
return 1
"""
)

# ARGV: now, then (job, lease expiry) per holder: the rebuild's last write. A render that
# answered while the table was read keeps its longer hold (GT); then the line is ready.
_REBUILT = (
    _LINE
    + """
for i = 2, #ARGV, 2 do
  redis.call('ZADD', L.holders, 'GT', ARGV[i + 1], ARGV[i])
  out(ARGV[i], false)
end
redis.call('SET', L.ready, '1')
return 1
"""
)

# KEYS: the line's. ARGV: now, job, lease, limit. Stretch (or shorten)
# the slot ``job`` holds; a job whose render is already running at the provider and whose
# slot lapsed (a crash between two writes) takes a free one back: the provider counts it
# either way. Never past the limit. 1 if held now.
_HOLD = (
    _LINE
    + """
local job, lease, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', L.holders, '-inf', now)
if redis.call('ZSCORE', L.holders, job) then
  redis.call('ZADD', L.holders, now + lease, job)
  return 1
end
if redis.call('EXISTS', L.ready) == 0 then
  -- The line is being rebuilt from the table, which may still show this job as before
  -- its answer: record the render's hold now; the rebuild keeps the longer one (GT).
  redis.call('ZADD', L.holders, 'GT', now + lease, job)
  return 1
end
if redis.call('ZCARD', L.holders) < limit_now(L.state, limit) then
  redis.call('ZADD', L.holders, now + lease, job)
  out(job, false)
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


# -- reading the answers --------------------------------------------------------------------
def _redis_time(redis: Any) -> float:
    seconds, micros = redis.time()
    return float(seconds) + float(micros) / 1_000_000


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _strs(members: Sequence[Any]) -> list[str]:
    return [_str(m) for m in members]


class ScriptPipeline:
    """A pipeline (no MULTI) that sends its scripts by sha alone.

    redis-py's own way (``script(..., client=pipe)``) asks Redis whether the pipeline's
    scripts are loaded (``SCRIPT EXISTS``) before every ``execute``: one round trip more
    for each submit the provider takes. Here a script Redis does not know (a restart, a
    ``SCRIPT FLUSH``) answers ``NOSCRIPT`` and is run again on its own, in order, which
    loads it; such a command did not run, so running it again is its first run. Every
    other command is the pipeline's own (``pipe.zcard(...)``)."""

    def __init__(self, redis: Any) -> None:
        self.pipe = redis.pipeline(transaction=False)
        self._scripts: dict[int, tuple[Any, Sequence[Any], Sequence[Any]]] = {}

    def script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        self._scripts[len(self.pipe.command_stack)] = (script, keys, args)
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def execute(self) -> list[Any]:
        from redis.exceptions import NoScriptError

        answers = list(self.pipe.execute(raise_on_error=False))
        for index, (script, keys, args) in self._scripts.items():
            if isinstance(answers[index], NoScriptError):
                answers[index] = script(keys=keys, args=args)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers
