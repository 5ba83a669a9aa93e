-- Applies one event to one task record, atomically. The mirror of
-- ferry_proto::state::transition; a test walks every case through both.
--
-- KEYS[1]  the task hash
-- ARGV     kind, attempt, at (micros), actor, result_ttl_secs,
--          then for terminal events: ok ("1"/"0"), data, exception, stdout, stderr
-- Returns  {1, to, attempt, cause}  applied (cause -1 when none)
--          {0, ignored_code}        ignored: 0 terminal, 1 stale attempt, 2 not forward
--          {-1}                     no such task
--
-- States:  0 received, 1 waiting-for-ep, 2 waiting-for-nodes, 3 waiting-for-launch,
--          4 running, 5 success, 6 failed
-- Events:  0 queued, 1 received, 2 assigned, 3 started, 4 succeeded, 5 failed, 6 lost,
--          7 endpoint-lost, 8 cancelled, 9 timed-out
-- Causes:  0 exception, 1 retries-exhausted, 2 cancelled, 3 timeout
local key = KEYS[1]
local cur = redis.call('HMGET', key, 's', 'a', 'r')
if not cur[1] then
  return {-1}
end
local s = tonumber(cur[1])
local a = tonumber(cur[2])
local r = tonumber(cur[3])
local kind = tonumber(ARGV[1])
local ea = tonumber(ARGV[2])

if s == 5 or s == 6 then
  return {0, 0}
end

-- sources[kind] = set of states the event may leave within an attempt
local nonterminal = {[0]=true, [1]=true, [2]=true, [3]=true, [4]=true}
local sources = {
  [0] = {[0]=true},
  [1] = {[0]=true, [1]=true},
  [2] = {[2]=true},
  [3] = {[2]=true, [3]=true},
  [4] = nonterminal, [5] = nonterminal,
  [6] = {[3]=true, [4]=true},
  [7] = {[2]=true, [3]=true, [4]=true},
}
local target = {[0]=1, [1]=2, [2]=3, [3]=4}

local to, na, cause = nil, nil, -1
if kind == 8 or kind == 9 then
  to = 6
  na = a
  if kind == 8 then cause = 2 else cause = 3 end
else
  if ea < a then
    return {0, 1}
  end
  if ea == a and not sources[kind][s] then
    return {0, 2}
  end
  na = ea
  if kind == 4 then
    to = 5
  elseif kind == 5 then
    to = 6
    cause = 0
  elseif kind == 6 and na >= r then
    to = 6
    cause = 1
  elseif kind == 6 then
    to = 2
    na = na + 1
  elseif kind == 7 then
    to = 1
    na = na + 1
  else
    to = target[kind]
  end
end

local at = ARGV[3]
local entry = to .. ',' .. na .. ',' .. at .. ',' .. ARGV[4]
if cause >= 0 then
  entry = entry .. ',' .. cause
end
local hist = redis.call('HGET', key, 'h') or ''
redis.call('HSET', key, 's', to, 'a', na, 'h', hist .. entry .. ';')

if to == 5 or to == 6 then
  redis.call('HSET', key, 't', at)
  if cause >= 0 then
    redis.call('HSET', key, 'why', cause)
  end
  if ARGV[6] then
    if ARGV[6] == '1' then
      redis.call('HSET', key, 'res', ARGV[7])
    else
      redis.call('HSET', key, 'exc', ARGV[7])
      if ARGV[8] ~= '' then
        redis.call('HSET', key, 'exd', ARGV[8])
      end
    end
    if ARGV[9] ~= '' then
      redis.call('HSET', key, 'out', ARGV[9])
    end
    if ARGV[10] ~= '' then
      redis.call('HSET', key, 'err', ARGV[10])
    end
  end
  local ttl = tonumber(ARGV[5])
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
end
return {1, to, na, cause}
