#!lua name=modelsched
-- The cluster's job functions (see scheduler/cluster/store.py and docs/architecture.md, "Cluster").
-- Every function takes the key prefix first (ARGV[1], "ms:<cluster>:") and runs atomically: a job's
-- hash, its stream entry, its idempotency key and its deadline change together or not at all.
-- A job's hash: id model status priority created_at started_at ended_at attempts host worker device
-- deadline timeout_s inputs result error error_kind idem stream entry cost_usd callback_url watchers
-- (the hosts told of its end: newline-separated). `jobs` indexes every job's id (a sorted set, one
-- score: in id order, so in creation order).

local GROUP = 'hosts'
local LEVELS = {'rq', '0', '1', '2'} -- the re-queue stream first, then high, normal, low

local function stream_of(p, model, level)
  if level == 'rq' then return p .. 'rq:' .. model end
  return p .. 'q:' .. model .. ':' .. level
end

-- a job run where it was submitted (`submit` with a host that has room) has no stream entry: it is a
-- member of the sorted set beside its stream (`<stream>:held`), scored by when its host last said it
-- holds it (Redis's clock, ms). The heartbeat's refresh raises the score; a reclaim takes members idle
-- past `reclaim_idle_s`, as XAUTOCLAIM takes a stream's pending entries. (Four stream commands a job
-- fewer: its XADD, the XREADGROUP that held it, the XACK and XDEL of its end.)
local function held_of(stream) return stream .. ':held' end

-- what one `many` call learns once for all of its calls (nil outside one): Redis's clock, the models
-- whose streams exist, whether jobs of a model wait before a priority (forgotten when a call queues a
-- job), and the ids of the ends written, told on `ends` in one message when the call is done
local turn = nil

local function now_ms()
  if turn and turn.clock then return turn.clock end
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if turn then turn.clock = ms end
  return ms
end

local function ensure_group(stream)
  local ok = pcall(redis.call, 'XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
  return ok
end

-- what ending a job needs of its hash, read in one call (finish reads its status and holder with it)
local END_FIELDS = {'stream', 'entry', 'host', 'watchers', 'idem', 'deadline'}
local function end_fields(jk, ...)
  local names = {...}
  local first = #names
  for _, name in ipairs(END_FIELDS) do names[#names + 1] = name end
  local values = redis.call('HMGET', jk, unpack(names))
  local known = {}
  for i, name in ipairs(END_FIELDS) do known[name] = values[first + i] or '' end
  return known, values
end

-- the end of a job: written once (the callers check its status first), kept `retention` seconds;
-- `known`: its `end_fields`. Told (PUBLISH of its id) on `ends` (every end: for observers) and on
-- `ends:<host>` of the hosts that want it: its watchers (the front that submitted it, the fronts that
-- read it while it ran) and the host that holds it, except `writer`, the host that wrote the end (it
-- knows: no message to itself)
local function write_end(p, id, status, now, fields, retention, writer, known)
  local jk = p .. 'job:' .. id
  if known.stream ~= '' and known.entry ~= '' then
    redis.call('XACK', known.stream, GROUP, known.entry)
    redis.call('XDEL', known.stream, known.entry)
    redis.call('HSET', jk, 'status', status, 'ended_at', now, 'entry', '', unpack(fields))
  else
    if known.stream ~= '' and known.host ~= '' then redis.call('ZREM', held_of(known.stream), id) end
    redis.call('HSET', jk, 'status', status, 'ended_at', now, unpack(fields))
  end
  if retention > 0 then
    redis.call('EXPIRE', jk, retention)
    if known.idem ~= '' then redis.call('EXPIRE', p .. 'key:' .. known.idem, retention) end
  end
  if known.deadline ~= '' then redis.call('ZREM', p .. 'deadlines', id) end
  if turn then turn.ends[#turn.ends + 1] = id else redis.call('PUBLISH', p .. 'ends', id) end
  local told = {[writer] = true, [''] = true}
  if not told[known.host] then
    redis.call('PUBLISH', p .. 'ends:' .. known.host, id)
    told[known.host] = true
  end
  for watcher in string.gmatch(known.watchers, '[^\n]+') do
    if not told[watcher] then
      redis.call('PUBLISH', p .. 'ends:' .. watcher, id)
      told[watcher] = true
    end
  end
end

-- jobs of `model` not delivered yet at `prio` or before it (the re-queue stream first)
local function waiting_before(p, model, prio)
  local key = model .. ' ' .. prio
  if turn and turn.waiting[key] ~= nil then return turn.waiting[key] end
  local waiting = false
  for _, level in ipairs(LEVELS) do
    local stream = stream_of(p, model, level)
    local length = redis.call('XLEN', stream)
    if length > 0 and length > redis.call('XPENDING', stream, GROUP)[1] then
      waiting = true
      break
    end
    if level == prio then break end
  end
  if turn then turn.waiting[key] = waiting end
  return waiting
end

-- submit(p, id, model, priority, created_at, timeout_s, deadline, idem, inputs, callback_url, host,
-- submitter) -> {1, id} new, {1, id, stream, ''} new and held by `host` at once (the submitting host has
-- room for it and nothing of its model waits before it: no claim round trip, no stream entry: a member
-- of `<stream>:held`), or {0, existing id} when the idempotency key named an earlier job. Fields with
-- no value are not written (a missing field reads as empty).
local function submit(keys, args)
  local p, id, model, prio = args[1], args[2], args[3], args[4]
  local idem = args[8]
  if #args < 10 or id == '' or model == '' or (prio ~= '0' and prio ~= '1' and prio ~= '2')
      or not tonumber(args[5]) or (args[7] ~= '' and not tonumber(args[7])) then -- nothing written
    return redis.error_reply('submit: bad arguments for job ' .. tostring(id))
  end
  if idem ~= '' then
    local ok = redis.call('SET', p .. 'key:' .. idem, id, 'NX')
    if not ok then
      local existing = redis.call('GET', p .. 'key:' .. idem)
      if redis.call('EXISTS', p .. 'job:' .. existing) == 1 then return {0, existing} end
      redis.call('SET', p .. 'key:' .. idem, id) -- the earlier job expired: this key is free again
    end
  end
  local stream = stream_of(p, model, prio)
  if not (turn and turn.models[model]) and redis.call('SISMEMBER', p .. 'models', model) == 0 then
    for _, level in ipairs(LEVELS) do ensure_group(stream_of(p, model, level)) end
    redis.call('SADD', p .. 'models', model)
  end
  if turn then turn.models[model] = true end
  local host = args[11] or ''
  local direct = host ~= '' and not waiting_before(p, model, prio)
  local fields = {'id', id, 'model', model, 'priority', prio, 'created_at', args[5], 'attempts', 0,
    'stream', stream, 'inputs', args[9]}
  local function put(name, value)
    if value ~= nil and value ~= '' then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  put('timeout_s', args[6])
  put('deadline', args[7])
  put('idem', idem)
  put('callback_url', args[10])
  put('watchers', args[12])
  if direct then -- nothing of its model waits at its priority or before it: `host` runs it now
    redis.call('ZADD', held_of(stream), now_ms(), id)
    put('status', 'processing')
    put('host', host)
    put('started_at', args[5])
  else
    put('status', 'queued')
    put('entry', redis.call('XADD', stream, '*', 'job', id))
    if turn then turn.waiting = {} end -- a job waits now: what waits before which priority is read again
  end
  redis.call('HSET', p .. 'job:' .. id, unpack(fields))
  if args[7] ~= '' then redis.call('ZADD', p .. 'deadlines', args[7], id) end
  redis.call('ZADD', p .. 'jobs', 0, id) -- every job's id, in id (creation) order: the job list's index
  if direct then return {1, id, stream, ''} end
  redis.call('PUBLISH', p .. 'queued', model)
  return {1, id}
end

-- the next undelivered entry's time (ms) of a stream, or nil
local function head_ms(stream)
  local groups = redis.call('XINFO', 'GROUPS', stream)
  for _, group in ipairs(groups) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    if info['name'] == GROUP then
      local next_entry = redis.call('XRANGE', stream, '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
      if #next_entry == 0 then return nil end
      return tonumber(string.match(next_entry[1][1], '^(%d+)'))
    end
  end
  return nil
end

-- claim(p, host, now, now_ms, total, cold_delay_ms, model, room, cold, model, room, cold, ...)
-- Strict priority: the re-queue streams, then every model's high, normal, low. A cold model (no
-- worker of the caller has it loaded) is taken only once its head job has waited `cold_delay_ms`.
-- -> a flat list, 12 values per job taken (id, the nine fields read, its stream and entry)
local function claim(keys, args)
  local p, host, now, now_ms = args[1], args[2], args[3], tonumber(args[4])
  local total, cold_delay = tonumber(args[5]), tonumber(args[6])
  local models = {}
  for i = 7, #args, 3 do
    models[#models + 1] = {name = args[i], room = tonumber(args[i + 1]), cold = args[i + 2] == '1'}
  end
  local taken = {}
  for _, level in ipairs(LEVELS) do
    for _, model in ipairs(models) do
      local stream = stream_of(p, model.name, level)
      local wanted = math.min(model.room, total)
      if wanted > 0 and model.cold and cold_delay > 0 and redis.call('EXISTS', stream) == 1 then
        local head = head_ms(stream)
        if head == nil or now_ms - head < cold_delay then wanted = 0 end
      end
      while wanted > 0 and redis.call('EXISTS', stream) == 1 do
        local read = redis.call('XREADGROUP', 'GROUP', GROUP, host, 'COUNT', wanted, 'STREAMS', stream, '>')
        if not read or #read == 0 or #read[1][2] == 0 then break end
        for _, item in ipairs(read[1][2]) do
          local entry, id = item[1], item[2][2]
          local jk = p .. 'job:' .. id
          local status = redis.call('HGET', jk, 'status')
          if status == 'queued' then
            redis.call('HSET', jk, 'status', 'processing', 'host', host, 'started_at', now,
              'stream', stream, 'entry', entry)
            local f = redis.call('HMGET', jk, 'model', 'priority', 'created_at', 'timeout_s', 'deadline',
              'idem', 'inputs', 'attempts', 'callback_url')
            taken[#taken + 1] = id
            for _, value in ipairs(f) do taken[#taken + 1] = value or '' end
            taken[#taken + 1] = stream
            taken[#taken + 1] = entry
            model.room = model.room - 1
            total = total - 1
            wanted = wanted - 1
          else -- cancelled or ended while it waited: its entry goes
            redis.call('XACK', stream, GROUP, entry)
            redis.call('XDEL', stream, entry)
          end
        end
      end
    end
  end
  return taken
end

-- finish(p, id, host, status, now, retention, field, value, ...): the end, written only while the job
-- is `processing` on `host` (a compare-and-set) -> 1 written, 0 not (cancelled, timed out, reclaimed)
local function finish(keys, args)
  local p, id, host = args[1], args[2], args[3]
  local jk = p .. 'job:' .. id
  local known, values = end_fields(jk, 'status')
  if values[1] ~= 'processing' or known.host ~= host then return 0 end
  local fields = {}
  for i = 7, #args do fields[#fields + 1] = args[i] end
  write_end(p, id, args[4], args[5], fields, tonumber(args[6]), host, known)
  return 1
end

-- cancel(p, id, now, retention) -> {1, host that ran it or ''} cancelled; {0, status} it had ended;
-- {-1, ''} no such job
local function cancel(keys, args)
  local p, id = args[1], args[2]
  local jk = p .. 'job:' .. id
  local known, values = end_fields(jk, 'status')
  local status = values[1]
  if not status then return {-1, ''} end
  if status ~= 'queued' and status ~= 'processing' then return {0, status} end
  write_end(p, id, 'cancelled', args[3], {'error', 'cancelled by request', 'error_kind', 'cancelled'},
    tonumber(args[4]), '', known)
  return {1, known.host}
end

-- a held job whose host is gone (or restarted): its entry goes; it is queued again on the re-queue
-- stream with one attempt more, or ends as poison at `max_attempts`
-- (`entry` '': a job held where it was submitted, a member of `<stream>:held`)
local function requeue(p, stream, entry, id, now, max_attempts, retention, why, penalize)
  if entry ~= '' then
    redis.call('XACK', stream, GROUP, entry)
    redis.call('XDEL', stream, entry)
  else
    redis.call('ZREM', held_of(stream), id)
  end
  local jk = p .. 'job:' .. id
  local status, model = unpack(redis.call('HMGET', jk, 'status', 'model'))
  if status ~= 'processing' and status ~= 'queued' then return 0 end
  local attempts = redis.call('HINCRBY', jk, 'attempts', penalize)
  if penalize > 0 and attempts >= max_attempts then
    redis.call('HSET', jk, 'entry', '')
    write_end(p, id, 'error', now, {'error', 'poison job: ' .. attempts .. ' host(s) or worker(s) died while running it'
      .. ' (max_attempts ' .. max_attempts .. ')', 'error_kind', 'poison'}, retention, '', (end_fields(jk)))
    return 1
  end
  local again = stream_of(p, model, 'rq')
  local new_entry = redis.call('XADD', again, '*', 'job', id)
  redis.call('HSET', jk, 'status', 'queued', 'host', '', 'stream', again, 'entry', new_entry)
  redis.call('PUBLISH', p .. 'queued', model)
  redis.call('PUBLISH', p .. 'reclaimed', id .. ' ' .. entry .. ' ' .. why)  -- the entry ('': a direct hold): whose hold it was
  return 1
end

-- reclaim(p, idle_ms, now, max_attempts, retention, consumer, penalize): entries and direct holds idle
-- past `idle_ms` (any host's), or every one `consumer` holds (a restarted host's old identity; a host
-- that stops hands its jobs back with penalize 0: no attempt counted) -> jobs re-queued or ended
local function reclaim(keys, args)
  local p, idle, now = args[1], tonumber(args[2]), args[3]
  local max_attempts, retention, consumer = tonumber(args[4]), tonumber(args[5]), args[6]
  local penalize = tonumber(args[7] or '1')
  local count = 0
  for _, model in ipairs(redis.call('SMEMBERS', p .. 'models')) do
    for _, level in ipairs(LEVELS) do
      local stream = stream_of(p, model, level)
      local entries = {}
      if consumer ~= '' then
        for _, pending in ipairs(redis.call('XPENDING', stream, GROUP, '-', '+', 1000, consumer)) do
          entries[#entries + 1] = pending[1]
        end
      else
        local claimed = redis.call('XAUTOCLAIM', stream, GROUP, '(reclaim)', idle, '0-0', 'COUNT', 1000, 'JUSTID')
        entries = claimed[2]
        for _, gone in ipairs(claimed[3] or {}) do redis.call('XACK', stream, GROUP, gone) end
      end
      for _, entry in ipairs(entries) do
        local item = redis.call('XRANGE', stream, entry, entry)
        if #item == 1 then
          count = count + requeue(p, stream, entry, item[1][2][2], now, max_attempts, retention,
            consumer ~= '' and 'restart' or 'idle', penalize)
        else
          redis.call('XACK', stream, GROUP, entry)
        end
      end
      local held = held_of(stream)
      if consumer ~= '' then
        for _, id in ipairs(redis.call('ZRANGE', held, 0, -1)) do
          if redis.call('HGET', p .. 'job:' .. id, 'host') == consumer then
            count = count + requeue(p, stream, '', id, now, max_attempts, retention, 'restart', penalize)
          end
        end
      elseif redis.call('EXISTS', held) == 1 then
        for _, id in ipairs(redis.call('ZRANGEBYSCORE', held, '-inf', now_ms() - idle, 'LIMIT', 0, 1000)) do
          count = count + requeue(p, stream, '', id, now, max_attempts, retention, 'idle', penalize)
        end
      end
    end
  end
  return count
end

-- watch(p, id, host) -> the job's hash (flat; empty: no such job); while it has not ended, `host` is
-- told of its end (`ends:<host>`): a wait reads and watches in one step, so no end is missed
local function watch(keys, args)
  local p, id, host = args[1], args[2], args[3]
  local jk = p .. 'job:' .. id
  local fields = redis.call('HGETALL', jk)
  if #fields == 0 then return fields end
  local status, watchers = unpack(redis.call('HMGET', jk, 'status', 'watchers'))
  if status == 'queued' or status == 'processing' then
    watchers = watchers or ''
    if not string.find('\n' .. watchers .. '\n', '\n' .. host .. '\n', 1, true) then
      redis.call('HSET', jk, 'watchers', watchers == '' and host or watchers .. '\n' .. host)
    end
  end
  return fields
end

-- attempts(p, id, host, n): a worker of `host` died under the job: its try count, while it holds it
local function attempts(keys, args)
  local jk = args[1] .. 'job:' .. args[2]
  local status, owner = unpack(redis.call('HMGET', jk, 'status', 'host'))
  if status ~= 'processing' or owner ~= args[3] then return 0 end
  redis.call('HSET', jk, 'attempts', args[4])
  return 1
end

-- refresh(p, host, stream, entry, id, stream, entry, id, ...): the held entries' idle time back to 0
-- (XCLAIM JUSTID counts no delivery), and the direct holds' (entry ''); one no longer held (reclaimed,
-- ended) is left alone -> how many
local function refresh(keys, args)
  local p, host = args[1], args[2]
  local count = 0
  local now = nil
  for i = 3, #args, 3 do
    if args[i + 1] ~= '' then
      count = count + #redis.call('XCLAIM', args[i], GROUP, host, 0, args[i + 1], 'JUSTID')
    else
      now = now or now_ms()
      count = count + redis.call('ZADD', held_of(args[i]), 'XX', 'CH', now, args[i + 2])
    end
  end
  return count
end

-- expire(p, now, retention, grace_s): queued jobs past their deadline end as timeouts; so do
-- processing ones `grace_s` past it (their host should have ended them) -> how many
local function expire(keys, args)
  local p, now, retention, grace = args[1], tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  local count = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'deadlines', '-inf', now, 'LIMIT', 0, 1000)) do
    local jk = p .. 'job:' .. id
    local status, deadline = unpack(redis.call('HMGET', jk, 'status', 'deadline'))
    if status == 'queued' or (status == 'processing' and now >= tonumber(deadline) + grace) then
      write_end(p, id, 'error', now, {'error', 'timeout: the job did not end within its timeout_s',
        'error_kind', 'timeout'}, retention, '', (end_fields(jk)))
      count = count + 1
    elseif status ~= 'processing' then
      redis.call('ZREM', p .. 'deadlines', id)
    end
  end
  return count
end

-- jobs(p, before, since, status, model, limit, ended_only, max_scan): the job list's page, newest
-- first by id (`GET /jobs`): ids below `before` and at or above `since` ('' : no bound), of `status`
-- and `model` ('' : any; `ended_only` '1': completed, error or cancelled only). Ids whose hash has
-- expired leave the index. -> {cursor, hash, hash, ...}: at most `limit` hashes (flat field lists);
-- cursor '' when the walk reached the end, else the last id looked at (it looked at `max_scan` ids
-- and the page is not full: the next page begins below the cursor)
local ENDED = {completed = true, error = true, cancelled = true}
local function jobs(keys, args)
  local p, before, since, status, model = args[1], args[2], args[3], args[4], args[5]
  local limit, ended_only, max_scan = tonumber(args[6]), args[7] == '1', tonumber(args[8])
  local index = p .. 'jobs'
  local upper = before ~= '' and '(' .. before or '+'
  local lower = since ~= '' and '[' .. since or '-'
  local out = {''}
  local scanned = 0
  while #out - 1 < limit do
    local ids = redis.call('ZREVRANGEBYLEX', index, upper, lower, 'LIMIT', 0, 200)
    if #ids == 0 then return out end
    for _, id in ipairs(ids) do
      local fields = redis.call('HGETALL', p .. 'job:' .. id)
      if #fields == 0 then
        redis.call('ZREM', index, id)
      else
        local info = {}
        for i = 1, #fields, 2 do info[fields[i]] = fields[i + 1] end
        if (status == '' or info['status'] == status) and (model == '' or info['model'] == model)
            and (not ended_only or ENDED[info['status']]) then
          out[#out + 1] = fields
          if #out - 1 == limit then return out end
        end
      end
      scanned = scanned + 1
      upper = '(' .. id
      if scanned >= max_scan then
        out[1] = id
        return out
      end
    end
  end
  return out
end

-- sweep(p, count): the next `count` ids of the job index (from where the last sweep stopped) whose
-- hash has expired leave it -> how many left
local function sweep(keys, args)
  local p, count = args[1], tonumber(args[2])
  local index, cursor_key = p .. 'jobs', p .. 'jobs:swept'
  local cursor = redis.call('GET', cursor_key)
  local lower = (cursor and cursor ~= '') and '(' .. cursor or '-'
  local ids = redis.call('ZRANGEBYLEX', index, lower, '+', 'LIMIT', 0, count)
  local gone = 0
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', p .. 'job:' .. id) == 0 then
      redis.call('ZREM', index, id)
      gone = gone + 1
    end
  end
  if #ids < count then redis.call('SET', cursor_key, '') else redis.call('SET', cursor_key, ids[#ids]) end
  return gone
end

-- depth(p) -> model, level, waiting (not delivered yet), held (delivered, not ended), ...
-- (ended entries are deleted, so the stream's length less its pending entries is what waits)
local function depth(keys, args)
  local p = args[1]
  local out = {}
  for _, model in ipairs(redis.call('SMEMBERS', p .. 'models')) do
    for _, level in ipairs(LEVELS) do
      local stream = stream_of(p, model, level)
      local length = redis.call('XLEN', stream)
      local held = redis.call('XPENDING', stream, GROUP)[1]
      local direct = redis.call('ZCARD', held_of(stream))
      out[#out + 1] = model
      out[#out + 1] = level
      out[#out + 1] = length - held
      out[#out + 1] = held + direct
    end
  end
  return out
end

-- many(p, function, n, arg, ..., n, arg, ...): the calls of one event-loop turn to one function
-- (submit, finish, watch, attempts), each with its own n arguments after the prefix, in one FCALL: the
-- call's own overhead (its parsing, dispatch and reply, its MULTI/EXEC in the append-only file) is paid
-- once per turn instead of once per job. Each call runs as it would alone (its checks and writes, its
-- answer); one that fails (a Lua error) answers an error and the others still run. What every call
-- would read alike is read once (`turn`), and the ends written are told on `ends` in one message
-- (ids separated by spaces).
-- -> one answer per call, in order
local BATCHED = {submit = submit, finish = finish, watch = watch, attempts = attempts}
local function many(keys, args)
  local p, run = args[1], BATCHED[args[2]]
  if run == nil then return redis.error_reply('many: no such grouped function: ' .. tostring(args[2])) end
  local out = {}
  local at = 3
  turn = {models = {}, waiting = {}, ends = {}}
  while at <= #args do
    local n = tonumber(args[at])
    if n == nil or at + n > #args then
      out = redis.error_reply('many: a bad argument count at ' .. at .. ' (the calls before it ran)')
      break
    end
    local call = {p}
    for i = 1, n do call[i + 1] = args[at + i] end
    local ok, answer = pcall(run, keys, call)
    if ok then
      out[#out + 1] = answer
    else
      out[#out + 1] = redis.error_reply(type(answer) == 'table' and tostring(answer.err) or tostring(answer))
    end
    at = at + n + 1
  end
  local ends = turn.ends
  turn = nil
  if #ends > 0 then redis.call('PUBLISH', p .. 'ends', table.concat(ends, ' ')) end
  return out
end

-- a function called on its own: no `many` call's knowledge applies (one cut short by an error or a
-- kill would otherwise leave it behind)
local function alone(fn)
  return function(keys, args)
    turn = nil
    return fn(keys, args)
  end
end

redis.register_function('modelsched_many', many)
redis.register_function('modelsched_submit', alone(submit))
redis.register_function('modelsched_claim', alone(claim))
redis.register_function('modelsched_finish', alone(finish))
redis.register_function('modelsched_cancel', alone(cancel))
redis.register_function('modelsched_reclaim', alone(reclaim))
redis.register_function('modelsched_refresh', alone(refresh))
redis.register_function('modelsched_attempts', alone(attempts))
redis.register_function('modelsched_expire', alone(expire))
redis.register_function('modelsched_jobs', alone(jobs))
redis.register_function('modelsched_watch', alone(watch))
redis.register_function('modelsched_sweep', alone(sweep))
redis.register_function{function_name = 'modelsched_depth', callback = alone(depth), flags = {'no-writes'}}
