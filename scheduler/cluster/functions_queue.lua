-- Part 2 of the cluster's Redis functions (`store.functions_source`): a job in and out of the
-- queue: submit, claim, finish, cancel.

-- submit(p, id, model, priority, created_at, timeout_s, deadline, idem, inputs, callback_url, host,
-- submitter, released) -> {1, id} new, {1, id, stream, ''} new and held by `host` at once (the
-- submitting host has room for it and nothing of its model waits before it: no claim round trip, no
-- stream entry: a member of `<stream>:held`), or {0, existing id} when the idempotency key named an
-- earlier job. `released` '1': a submission the host held back while the job already ran there
-- (`record`), written now: held by `host` whatever waits, and only if no hash of it is there yet
-- (its end came first) -> {2, id} when there was. Fields with no value are not written (a missing
-- field reads as empty).
local function submit(keys, args)
  local p, id, model, prio = args[1], args[2], args[3], args[4]
  local idem = args[8]
  if #args < 10 or id == '' or model == '' or (prio ~= '0' and prio ~= '1' and prio ~= '2')
      or not tonumber(args[5]) or (args[7] ~= '' and not tonumber(args[7])) then -- nothing written
    return redis.error_reply('submit: bad arguments for job ' .. tostring(id))
  end
  local released = args[13] == '1'
  if released and redis.call('EXISTS', p .. 'job:' .. id) == 1 then return {2, id} end
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
  local direct = host ~= '' and (released or not waiting_before(p, model, prio))
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

-- record(p, id, host, status, now, retention, n, field, value, ... (n values: the submission's
-- fields), field, value, ... (the end's, as `finish` takes them)): the end of a job whose submission
-- its host held back (an infer that ended within the hold: scheduler/core/held.py), written with
-- the submission as one hash, kept `retention` seconds; no stream, no held set, no deadline: it ran
-- where it was submitted and nobody else knew of it. A job whose submission was written meanwhile
-- (released: the hold ran out) is finished as `finish` does -> 1 written, 0 not
local function record(keys, args)
  local p, id, host, n = args[1], args[2], args[3], tonumber(args[7])
  if not n or id == '' or 7 + n > #args or not tonumber(args[6]) then
    return redis.error_reply('record: bad arguments for job ' .. tostring(id))
  end
  local ends = {p, id, host, args[4], args[5], args[6]}
  for i = 8 + n, #args do ends[#ends + 1] = args[i] end
  local jk = p .. 'job:' .. id
  if redis.call('EXISTS', jk) == 1 then return finish(keys, ends) end
  local fields = {'status', args[4], 'ended_at', args[5], 'host', host}
  for i = 8, #args do fields[#fields + 1] = args[i] end
  redis.call('HSET', jk, unpack(fields))
  local retention = tonumber(args[6])
  if retention > 0 then redis.call('EXPIRE', jk, retention) end
  redis.call('ZADD', p .. 'jobs', 0, id) -- the job list's index
  if turn then turn.ends[#turn.ends + 1] = id else redis.call('PUBLISH', p .. 'ends', id) end
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
