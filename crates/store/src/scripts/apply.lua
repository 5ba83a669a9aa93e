-- Applies events to task records, atomically, in order: many tasks per call, so the
-- call's own cost (and the batch counters, the in-flight sets) is paid once per call,
-- not once per task. The mirror of ferry_proto::state::transition; a test walks every
-- case through both.
--
-- KEYS     the task hashes, one per group (a key may repeat: its groups run in order)
-- ARGV     result_ttl_secs, namespace, then per group, in KEYS order:
--            n (events), fin, fi, from, own, then n times: kind, attempt, at
--            (micros), actor; then, when fin is not '-': data, exception, stdout,
--            stderr.
--          fin is '-' (no result), '1' success, '2' success with the result in the
--          data plane under <task key>:out:<attempt>, '0' failure; fi (0-based) is the
--          event that carries it: its fields are stored if that event ends the task.
--          The first `own` events are Ferry's own; the rest were sent by endpoint
--          `from` ('-' when none) and apply only to its own tasks (to another's: 3).
--
-- Besides the task hashes it keeps, in the same atomic step (so they can never drift):
--   <ns>:batch:{b}        n0..n6: how many of the batch's tasks are in each state, and
--                         `done` (micros) once every task is terminal
--   <ns>:batch:{b}:ev     when the batch has `ev` set (someone watches it): one stream
--                         entry per step, fields t (task id) and e (the history entry)
--   <ns>:open-batches     batches with tasks still `received` (left once none is)
--   <ns>:ep:<e>:wait      the endpoint's batches with tasks `waiting-for-ep` (the
--                         sweeper looks there for tasks whose message was lost)
--   <ns>:ep:<e>:run       the endpoint's in-flight tasks (waiting-for-nodes ..
--                         running), which the forwarder moves back when it is lost
--   <ns>:unfinished       u:<user>, e:<endpoint>: unfinished tasks (submission adds,
--                         a task's end here takes one off), for the per-user and
--                         per-endpoint limits
--   <ns>:states           n0..n4: tasks in each unfinished state, all users together
--                         (submission adds to n0; the web-service's /metrics reads it)
-- and publishes, once per call, the ids of the tasks it ended (space-separated) on
--   <ns>:finished         so callers waiting for a result are answered at once
-- These key names are built here, not passed in KEYS: Ferry needs one Redis (or one
-- cluster slot per batch), not a cluster spread.
-- Returns  one integer per event, in ARGV order (one, not four: each integer of a reply
--          costs Redis and the caller's parser more than the arithmetic):
--          1 + 4 * (to + 8 * (cause + 1 + 8 * attempt))   applied (cause -1 when none)
--          2 + 4 * ignored     ignored: 0 terminal, 1 stale attempt, 2 not forward
--          0                   no such task
--          3                   the task is another endpoint's than `from`: untouched
--
-- States:  0 received, 1 waiting-for-ep, 2 waiting-for-nodes, 3 waiting-for-launch,
--          4 running, 5 success, 6 failed
-- Events:  0 queued, 1 received, 2 assigned, 3 started, 4 succeeded, 5 failed, 6 lost,
--          7 endpoint-lost, 8 cancelled, 9 timed-out, 10 block-ended (like a retried
--          loss, with one retry more: `r` grows by one), 11 requeued (waiting-for-ep
--          again, attempt+1, `r` one more)
-- Causes:  0 exception, 1 retries-exhausted, 2 cancelled, 3 timeout, 4 block-ended (on
--          the waiting-for-nodes step of a block-ended event: not a failure),
--          5 message-lost (on the step of a requeued event: not a failure)
local ttl = tonumber(ARGV[1])
local ns = ARGV[2]
local out = {}
local no = 0 -- #out
local call = redis.call
local tonumber = tonumber

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
  [10] = {[3]=true, [4]=true},
  [11] = {[1]=true},
}
local target = {[0]=1, [1]=2, [2]=3, [3]=4}

-- Lua 5.1 turns numbers into strings with a floating-point printf, which is slow:
-- small integers (states, attempts, step numbers) come from this cache instead.
local strings = {}
local function str(n)
  local v = strings[n]
  if v == nil then
    v = string.format('%d', n)
    strings[n] = v
  end
  return v
end

-- Pieces of history entries, each built once per call: 'h<k>' field names and
-- '<state>,<attempt>,' heads.
local hnames, heads = {}, {}
local function hname(k)
  local v = hnames[k]
  if v == nil then
    v = 'h' .. str(k)
    hnames[k] = v
  end
  return v
end
local function head_of(to, na)
  local k = to * 4096 + na
  local v = heads[k]
  if v == nil then
    v = str(to) .. ',' .. str(na) .. ','
    heads[k] = v
  end
  return v
end
-- Per batch touched by this call: its key, whether it exists and is watched, the
-- counter deltas, and when its last task ended here.
local batches = {}
local function batch_of(id)
  local b = batches[id]
  if b == nil then
    local key = ns .. ':batch:{' .. id .. '}'
    local got = call('HMGET', key, 'open', 'ev', 'owner')
    b = {key = key, exists = got[1] and true or false, watched = got[2] and true or false,
         owner = got[3], delta = {}, open = 0, last_at = nil}
    batches[id] = b
  end
  return b
end
-- Per endpoint: task id -> true (now in flight) or false (no longer); the last word wins.
local running = {}
-- Per unfinished state, the change in how many tasks are in it.
local live = {}
-- Tasks this call ended.
local finished = {}

local pos = 3
for g = 1, #KEYS do
  local key = KEYS[g]
  local n = tonumber(ARGV[pos])
  local fin = ARGV[pos + 1]
  local fi = tonumber(ARGV[pos + 2])
  local from = ARGV[pos + 3]
  local own = tonumber(ARGV[pos + 4])
  local ev0 = pos + 5
  local finish = ev0 + 4 * n
  if fin == '-' then pos = finish else pos = finish + 4 end

  -- `r` (retries) is read only when a loss needs it: each field read costs.
  local cur = call('HMGET', key, 's', 'a', 'hn', 'e', 'b')
  -- Events from `cut` on are another endpoint's report on this task: not applied.
  local cut = n
  if from ~= '-' and cur[4] ~= from then cut = own end
  if not cur[1] then
    for _ = 1, n do
      no = no + 1; out[no] = 0
    end
  else
    local s = tonumber(cur[1])
    local a = tonumber(cur[2])
    local r = nil
    local r_changed = false
    -- The history is one field per step (h0, h1, ...; hn of them), each
    -- `state,attempt,at,actor[,cause]` with `at` in micros since the epoch, as it came
    -- (the first, written at creation, has 0: the creation time `c`). Short values keep
    -- a small task's hash in Redis's compact (listpack) encoding.
    local hn = tonumber(cur[3]) or 0
    local s0 = s
    local last_at = nil
    -- Fields to write with the state in one HSET: history steps, then terminal fields.
    local fields = nil
    local nf = 0 -- #fields
    local steps = 0
    local batch = nil
    if cur[5] then
      batch = batch_of(cur[5])
      if not batch.exists then batch = nil elseif batch.ep == nil then batch.ep = cur[4] end
    end
    -- A batch someone watches (WebSocket, webhook) gets every step in its stream.
    local events = nil
    if batch and batch.watched then events = {} end

    for i = 0, cut - 1 do
      local base = ev0 + 4 * i
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
        if (kind == 6 or kind == 7 or kind == 10 or kind == 11) and na >= 4294967295 then
          -- No next attempt number (u32) to fence this one's reports: it ends here.
          to = 6
          cause = 1
        elseif kind == 4 then
          to = 5
        elseif kind == 5 then
          to = 6
          cause = 0
        elseif kind == 6 then
          if r == nil then r = tonumber(call('HGET', key, 'r')) or 0 end
          if na >= r then
            to = 6
            cause = 1
          else
            to = 2
            na = na + 1
          end
        elseif kind == 7 then
          to = 1
          na = na + 1
        elseif kind == 10 or kind == 11 then
          if r == nil then r = tonumber(call('HGET', key, 'r')) or 0 end
          r = r + 1
          r_changed = true
          na = na + 1
          if kind == 10 then
            to = 2
            cause = 4
          else
            to = 1
            cause = 5
          end
        else
          to = target[kind]
        end
      end
      if ignored then
        no = no + 1; out[no] = 2 + 4 * ignored
      else
        if fields == nil then fields = {} end
        local tail = ',' .. actor
        if cause >= 0 then
          tail = tail .. ',' .. str(cause)
        end
        local entry = head_of(to, na) .. at .. tail
        fields[nf + 1] = hname(hn + steps)
        fields[nf + 2] = entry
        nf = nf + 2
        steps = steps + 1
        if events then events[#events + 1] = entry end
        s = to
        a = na
        last_at = at
        if to == 5 or to == 6 then
          fields[nf + 1] = 't'; fields[nf + 2] = at; nf = nf + 2
          if cause >= 0 then
            fields[nf + 1] = 'why'; fields[nf + 2] = str(cause); nf = nf + 2
          end
          if fin ~= '-' and i == fi then
            if fin == '2' then
              -- The result is in the data plane, under this attempt.
              fields[nf + 1] = 'rr'; fields[nf + 2] = str(na); nf = nf + 2
            elseif fin == '1' then
              fields[nf + 1] = 'res'; fields[nf + 2] = ARGV[finish]; nf = nf + 2
            else
              fields[nf + 1] = 'exc'; fields[nf + 2] = ARGV[finish]; nf = nf + 2
              if ARGV[finish + 1] ~= '' then
                fields[nf + 1] = 'exd'; fields[nf + 2] = ARGV[finish + 1]; nf = nf + 2
              end
            end
            if ARGV[finish + 2] ~= '' then
              fields[nf + 1] = 'out'; fields[nf + 2] = ARGV[finish + 2]; nf = nf + 2
            end
            if ARGV[finish + 3] ~= '' then
              fields[nf + 1] = 'err'; fields[nf + 2] = ARGV[finish + 3]; nf = nf + 2
            end
          end
        end
        no = no + 1; out[no] = 1 + 4 * (to + 8 * (cause + 1 + 8 * na))
      end
    end
    for _ = cut, n - 1 do
      no = no + 1; out[no] = 3
    end

    if fields ~= nil then
      fields[nf + 1] = 's'; fields[nf + 2] = str(s); nf = nf + 2
      fields[nf + 1] = 'a'; fields[nf + 2] = str(a); nf = nf + 2
      fields[nf + 1] = 'hn'; fields[nf + 2] = str(hn + steps); nf = nf + 2
      if r_changed then
        fields[nf + 1] = 'r'; fields[nf + 2] = str(r); nf = nf + 2
      end
      call('HSET', key, unpack(fields))
      local terminal = s == 5 or s == 6
      if terminal and s0 < 5 and ttl > 0 then
        call('EXPIRE', key, ttl)
      end
      -- key is <ns>:task:{<id>}; the id is cut out only when needed.
      local tid = nil
      if events or (s ~= s0 and (terminal or s >= 2 or s0 >= 2)) then
        tid = string.sub(key, #ns + 8, -2)
      end
      if events then
        for _, e in ipairs(events) do
          call('XADD', batch.key .. ':ev', '*', 't', tid, 'e', e)
        end
      end
      if s ~= s0 then
        if terminal then
          finished[#finished + 1] = tid
          -- The input is only needed to dispatch the task again.
          if call('HDEL', key, 'p') == 0 then
            -- No inline input: it was kept under its own key.
            call('HDEL', key, 'pi')
            call('DEL', key .. ':in')
          end
        end
        if cur[4] and ((s >= 2 and s <= 4) or (s0 >= 2 and s0 <= 4)) then
          local set = running[cur[4]]
          if set == nil then
            set = {}
            running[cur[4]] = set
          end
          if s >= 2 and s <= 4 then
            set[tid] = true
          elseif s0 >= 2 and s0 <= 4 then
            set[tid] = false
          end
        end
        if s0 < 5 then live[s0] = (live[s0] or 0) - 1 end
        if s < 5 then live[s] = (live[s] or 0) + 1 end
        if batch then
          batch.delta[s0] = (batch.delta[s0] or 0) - 1
          batch.delta[s] = (batch.delta[s] or 0) + 1
          if terminal and s0 < 5 then
            batch.open = batch.open + 1
            batch.last_at = last_at
          end
        end
      end
    end
  end
end

if #finished > 0 then
  call('PUBLISH', ns .. ':finished', table.concat(finished, ' '))
end

for ep, set in pairs(running) do
  local add, rem = {}, {}
  for tid, now in pairs(set) do
    if now then add[#add + 1] = tid else rem[#rem + 1] = tid end
  end
  local key = ns .. ':ep:' .. ep .. ':run'
  if #add > 0 then call('SADD', key, unpack(add)) end
  if #rem > 0 then call('SREM', key, unpack(rem)) end
end

for id, b in pairs(batches) do
  for state, d in pairs(b.delta) do
    if d ~= 0 then
      local now = call('HINCRBY', b.key, 'n' .. state, d)
      if state == 0 and now == 0 then
        -- No task of the batch is left in `received`: the sweeper need not watch it.
        call('ZREM', ns .. ':open-batches', id)
      elseif state == 1 and b.ep then
        if now == 0 then
          call('SREM', ns .. ':ep:' .. b.ep .. ':wait', id)
        elseif now == d then
          call('SADD', ns .. ':ep:' .. b.ep .. ':wait', id)
        end
      end
    end
  end
  if b.open > 0 then
    -- Fewer unfinished tasks for the batch's owner and endpoint (their limits).
    -- Never below 0 (tasks submitted before the counts were kept end uncounted).
    local fields = {}
    if b.owner then fields[#fields + 1] = 'u:' .. b.owner end
    if b.ep then fields[#fields + 1] = 'e:' .. b.ep end
    for _, field in ipairs(fields) do
      if call('HINCRBY', ns .. ':unfinished', field, -b.open) < 0 then
        call('HSET', ns .. ':unfinished', field, 0)
      end
    end
    local left = call('HINCRBY', b.key, 'open', -b.open)
    if left == 0 then
      batch_done(b.key, b.last_at, ttl)
    end
  end
end
for state, d in pairs(live) do
  if d ~= 0 then call('HINCRBY', ns .. ':states', 'n' .. state, d) end
end
return out
