"""The Lua scripts that change shared state: each is one atomic round trip.

Times are Redis's own (``TIME``, in ms): processes never compare their clocks. A breaker
is one hash (``s`` state 0 closed / 1 open / 2 half-open, ``g`` generation, ``u`` open
until, ``k`` trips in a row, ``p`` probes in flight, ``d`` probe lease deadline, ``h``
probe successes, ``c`` consecutive failures); every script returns
``{flag, s, g, ms of open time left, k, extra}``.
"""

from __future__ import annotations

__all__ = ["BREAKER_CLAIM", "BREAKER_PROBE_DONE", "BREAKER_SYNC", "BREAKER_TRIP", "BUDGET"]

# ARGV[1] key ttl ms; ARGV[2..5] open period: base ms, multiplier, cap ms, jitter sample.
_BREAKER_PRELUDE = """
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', key, 's', 'g', 'u', 'k', 'p', 'd', 'h', 'c')
local s = tonumber(v[1]) or 0
local g = tonumber(v[2]) or 0
local u = tonumber(v[3]) or 0
local k = tonumber(v[4]) or 0
local p = tonumber(v[5]) or 0
local d = tonumber(v[6]) or 0
local h = tonumber(v[7]) or 0
local c = tonumber(v[8]) or 0
local ttl = tonumber(ARGV[1])
local function trip(period)
  k = k + 1
  if period <= 0 then
    period = tonumber(ARGV[2])
    local mult = tonumber(ARGV[3])
    if k > 1 and mult > 1 then
      period = math.min(tonumber(ARGV[4]), period * mult ^ (k - 1))
    end
    period = period * (1 - tonumber(ARGV[5]))
  end
  s = 1; g = g + 1; u = now + math.floor(period); p = 0; h = 0; c = 0
end
-- A probe whose process died without reporting frees its slot at the lease deadline.
if s == 2 and p > 0 and now > d then p = 0 end
local function save()
  redis.call('HSET', key, 's', s, 'g', g, 'u', u, 'k', k, 'p', p, 'd', d, 'h', h, 'c', c)
  redis.call('PEXPIRE', key, ttl)
end
local function reply(flag, extra)
  local left = 0
  if s == 1 and u > now then left = u - now end
  return {flag, s, g, left, k, extra}
end
"""

#: Flush a process's counts (ARGV[6] successes, [7] failures, [8] its trailing failures,
#: [9] threshold or 0) and read the state; trips when the fleet's failures in a row reach
#: the threshold.
BREAKER_SYNC = (
    _BREAKER_PRELUDE
    + """
local succ = tonumber(ARGV[6])
local fail = tonumber(ARGV[7])
local tripped = 0
if s == 0 then
  if succ > 0 then c = tonumber(ARGV[8]) else c = c + fail end
  local threshold = tonumber(ARGV[9])
  if threshold > 0 and c >= threshold then trip(0); tripped = 1 end
end
save()
return reply(tripped, 0)
"""
)

#: This process tripped: open the fleet for ARGV[6] ms (unless it is open already). With
#: ARGV[7] = 1 only when the key is new (Redis came back empty): otherwise the fleet's state,
#: newer than what a cut-off process saw, wins.
BREAKER_TRIP = (
    _BREAKER_PRELUDE
    + """
local tripped = 0
if ARGV[7] == '1' and v[2] then return reply(0, 0) end
if s ~= 1 then trip(tonumber(ARGV[6])); tripped = 1 end
save()
return reply(tripped, 0)
"""
)

#: Claim a half-open probe (ARGV[6] probes at most, [7] lease ms, [8] ms to wait when
#: refused because a probe runs). Flag 1: claimed; extra: ms to wait when refused.
BREAKER_CLAIM = (
    _BREAKER_PRELUDE
    + """
local took = 0
local wait = 0
if s == 1 then
  if now >= u then
    s = 2; g = g + 1; p = 1; h = 0; d = now + tonumber(ARGV[7]); took = 1
  else
    wait = u - now
  end
elseif s == 2 then
  if p < tonumber(ARGV[6]) then
    p = p + 1; d = now + tonumber(ARGV[7]); took = 1
  else
    wait = math.max(1, math.min(tonumber(ARGV[8]), d - now))
  end
end
if took == 1 then save() end
return reply(took, wait)
"""
)

#: A probe ended: ARGV[6] is 1 success, -1 failure, 0 neither; ARGV[7] the successes that
#: close. Flag 1 when the state moved.
BREAKER_PROBE_DONE = (
    _BREAKER_PRELUDE
    + """
local moved = 0
if s == 2 then
  if p > 0 then p = p - 1 end
  local outcome = tonumber(ARGV[6])
  if outcome > 0 then
    h = h + 1
    if h >= tonumber(ARGV[7]) then s = 0; g = g + 1; k = 0; c = 0; h = 0; p = 0; moved = 1 end
  elseif outcome < 0 then
    trip(0); moved = 1
  end
  save()
end
return reply(moved, 0)
"""
)

#: A budget: one hash with, per time bucket i, its epoch ``e<i>``, deposits ``d<i>`` and
#: withdrawals ``w<i>``. ARGV: bucket width ms, buckets, reserve (the fleet-wide floor),
#: ratio, deposits to add, 1 to spend a retry, key ttl ms. Returns {1 if spent, balance,
#: ms until a retry is allowed or -1}.
BUDGET = """
local key = KEYS[1]
local width = tonumber(ARGV[1])
local nb = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = math.floor(now / width)
local cur = epoch % nb
local flat = redis.call('HGETALL', key)
local f = {}
for i = 1, #flat, 2 do f[flat[i]] = tonumber(flat[i + 1]) end
local deposits = 0
local withdrawals = 0
for i = 0, nb - 1 do
  local e = f['e' .. i]
  if e and e > epoch - nb then
    deposits = deposits + (f['d' .. i] or 0)
    withdrawals = withdrawals + (f['w' .. i] or 0)
  end
end
if f['e' .. cur] ~= epoch then
  -- The slot's old bucket is older than the window: it was not counted above.
  redis.call('HSET', key, 'e' .. cur, epoch, 'd' .. cur, 0, 'w' .. cur, 0)
end
local dep = tonumber(ARGV[5])
if dep > 0 then
  redis.call('HINCRBY', key, 'd' .. cur, dep)
  deposits = deposits + dep
end
local ratio = tonumber(ARGV[4])
local balance = tonumber(ARGV[3]) + ratio * deposits - withdrawals
local spent = 0
if tonumber(ARGV[6]) > 0 and balance >= 1 - 1e-9 then
  redis.call('HINCRBY', key, 'w' .. cur, 1)
  balance = balance - 1
  spent = 1
end
redis.call('PEXPIRE', key, tonumber(ARGV[7]))
-- ms until a retry would be allowed without new traffic (0: now; -1: only new calls can
-- refill it): buckets expire oldest first, each giving back its withdrawals and taking
-- its deposits' share.
local wait = 0
if balance < 1 - 1e-9 then
  wait = -1
  local b = balance
  for step = 1, nb do
    local e = epoch - nb + step
    local j = e % nb
    if e == epoch then
      local same = f['e' .. cur] == epoch
      local d = (same and (f['d' .. cur] or 0) or 0) + dep
      local w = (same and (f['w' .. cur] or 0) or 0) + spent
      b = b + w - ratio * d
    elseif f['e' .. j] == e then
      b = b + (f['w' .. j] or 0) - ratio * (f['d' .. j] or 0)
    end
    if b >= 1 - 1e-9 then
      wait = (e + nb) * width - now
      break
    end
  end
end
return {spent, tostring(balance), wait}
"""
