-- Applies events to one task record, atomically, in order. The mirror of
-- ferry_proto::state::transition; a test walks every case through both.
--
-- KEYS[1]  the task hash
-- ARGV     result_ttl_secs, namespace, n (events), then n times: kind, attempt, at
--          (micros), actor;
--          then, for a report that may end the task: ok ("1", "0", or "2": success
--          with the result in the data plane under <task key>:out:<attempt>), data, exception,
--          stdout, stderr (stored by whichever of the events ends the task)
--
-- Besides the task hash it keeps, in the same atomic step (so they can never drift):
--   <ns>:batch:{b}        n0..n6: how many of the batch's tasks are in each state, and
--                         `done` (micros) once every task is terminal
--   <ns>:batch:{b}:ev     when the batch has `ev` set (someone watches it): one stream
--                         entry per step, fields t (task id) and e (the history entry,
--                         with `at` in absolute micros)
--   <ns>:open-batches     batches with tasks still `received` (left once none is)
--   <ns>:ep:<e>:run       the endpoint's in-flight tasks (waiting-for-nodes ..
--                         running), which the forwarder moves back when it is lost
-- These key names are built here, not passed in KEYS: Ferry needs one Redis (or one
-- cluster slot per batch), not a cluster spread.
-- Returns  4 integers per event:
--          {1, to, attempt, cause}  applied (cause -1 when none)
--          {0, ignored, 0, 0}       ignored: 0 terminal, 1 stale attempt, 2 not forward
--          {-1, 0, 0, 0}            no such task
--
-- States:  0 received, 1 waiting-for-ep, 2 waiting-for-nodes, 3 waiting-for-launch,
--          4 running, 5 success, 6 failed
-- Events:  0 queued, 1 received, 2 assigned, 3 started, 4 succeeded, 5 failed, 6 lost,
--          7 endpoint-lost, 8 cancelled, 9 timed-out
-- Causes:  0 exception, 1 retries-exhausted, 2 cancelled, 3 timeout
local key = KEYS[1]
local ttl = tonumber(ARGV[1])
local ns = ARGV[2]
local n = tonumber(ARGV[3])
local finish = 4 + 4 * n
local out = {}
local cur = redis.call('HMGET', key, 's', 'a', 'r', 'hn', 'e', 'b', 'c', 'pi')
if not cur[1] then
  for i = 1, n do
    out[#out + 1] = -1; out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = 0
  end
  return out
end
local s = tonumber(cur[1])
local a = tonumber(cur[2])
local r = tonumber(cur[3])
-- The history is one field per step (h0, h1, ...; hn of them), each
-- `state,attempt,at,actor[,cause]` with `at` in micros after the task's creation `c`:
-- short values keep a small task's hash in Redis's compact (listpack) encoding.
local hn = tonumber(cur[4]) or 0
local created = tonumber(cur[7]) or 0
local hist = {}
local s0 = s
local last_at = nil
local changed = false
local events = {}
-- Fields the terminal event sets, written with the state in one HSET.
local term = {}

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

for i = 0, n - 1 do
  local base = 4 + 4 * i
  local kind = tonumber(ARGV[base])
  local ea = tonumber(ARGV[base + 1])
  local at = ARGV[base + 2]
  local actor = ARGV[base + 3]
  local to, na, cause, ignored = nil, nil, -1, nil
  if s == 5 or s == 6 then
    ignored = 0
  elseif kind == 8 or kind == 9 then
    to = 6
    na = a
    if kind == 8 then cause = 2 else cause = 3 end
  elseif ea < a then
    ignored = 1
  elseif ea == a and not sources[kind][s] then
    ignored = 2
  else
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
  if ignored then
    out[#out + 1] = 0; out[#out + 1] = ignored; out[#out + 1] = 0; out[#out + 1] = 0
  else
    local tail = ',' .. actor
    if cause >= 0 then
      tail = tail .. ',' .. cause
    end
    hist[#hist + 1] = to .. ',' .. na .. ',' .. string.format('%d', tonumber(at) - created) .. tail
    events[#events + 1] = to .. ',' .. na .. ',' .. at .. tail
    s = to
    a = na
    last_at = at
    changed = true
    if to == 5 or to == 6 then
      term[#term + 1] = 't'; term[#term + 1] = at
      if cause >= 0 then
        term[#term + 1] = 'why'; term[#term + 1] = cause
      end
      if ARGV[finish] then
        if ARGV[finish] == '2' then
          -- The result is in the data plane, under this attempt.
          term[#term + 1] = 'rr'; term[#term + 1] = na
        elseif ARGV[finish] == '1' then
          term[#term + 1] = 'res'; term[#term + 1] = ARGV[finish + 1]
        else
          term[#term + 1] = 'exc'; term[#term + 1] = ARGV[finish + 1]
          if ARGV[finish + 2] ~= '' then
            term[#term + 1] = 'exd'; term[#term + 1] = ARGV[finish + 2]
          end
        end
        if ARGV[finish + 3] ~= '' then
          term[#term + 1] = 'out'; term[#term + 1] = ARGV[finish + 3]
        end
        if ARGV[finish + 4] ~= '' then
          term[#term + 1] = 'err'; term[#term + 1] = ARGV[finish + 4]
        end
      end
    end
    out[#out + 1] = 1; out[#out + 1] = to; out[#out + 1] = na; out[#out + 1] = cause
  end
end
if changed then
  local fields = {'s', s, 'a', a, 'hn', hn + #hist}
  for i, e in ipairs(hist) do
    fields[#fields + 1] = 'h' .. (hn + i - 1)
    fields[#fields + 1] = e
  end
  for _, v in ipairs(term) do
    fields[#fields + 1] = v
  end
  redis.call('HSET', key, unpack(fields))
  if #term > 0 and ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
end
-- The batch's `open` (always set while it exists) and `ev` (its stream is on).
local batch = nil
local watched = false
if changed and cur[6] then
  batch = ns .. ':batch:{' .. cur[6] .. '}'
  local b = redis.call('HMGET', batch, 'open', 'ev')
  if not b[1] then
    batch = nil
  else
    watched = b[2] and true or false
  end
end
-- A batch someone watches (WebSocket, webhook) gets every step in its event stream.
if watched then
  local tid = string.sub(key, #ns + 8, -2)
  for _, e in ipairs(events) do
    redis.call('XADD', batch .. ':ev', '*', 't', tid, 'e', e)
  end
end
if s ~= s0 then
  local terminal = s == 5 or s == 6
  if terminal then
    -- The input is only needed to dispatch the task again.
    redis.call('HDEL', key, 'p', 'pi')
    if cur[8] then
      redis.call('DEL', key .. ':in')
    end
  end
  if cur[5] then
    local run = ns .. ':ep:' .. cur[5] .. ':run'
    -- key is <ns>:task:{<id>}
    local tid = string.sub(key, #ns + 8, -2)
    if s >= 2 and s <= 4 then
      redis.call('SADD', run, tid)
    elseif s0 >= 2 and s0 <= 4 then
      redis.call('SREM', run, tid)
    end
  end
  if batch then
    do
      local before = redis.call('HINCRBY', batch, 'n' .. s0, -1)
      redis.call('HINCRBY', batch, 'n' .. s, 1)
      if s0 == 0 and before == 0 then
        -- No task of the batch is left in `received`: the sweeper need not watch it.
        redis.call('ZREM', ns .. ':open-batches', cur[6])
      end
      if terminal and s0 < 5 then
        local left = redis.call('HINCRBY', batch, 'open', -1)
        if left == 0 then
          redis.call('HSET', batch, 'done', last_at)
          if ttl > 0 then
            redis.call('EXPIRE', batch, ttl)
            redis.call('EXPIRE', batch .. ':tasks', ttl)
            -- A finished batch's events are for resuming clients and webhook retries:
            -- an hour is plenty, and they would cost more than the records themselves.
            redis.call('EXPIRE', batch .. ':ev', math.min(ttl, 3600))
          end
        end
      end
    end
  end
end
return out
