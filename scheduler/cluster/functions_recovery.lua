-- Part 3 of the cluster's Redis functions (`store.functions_source`): what keeps jobs alive and
-- ends the lost ones: re-queue, reclaim, watch, attempts, refresh, expire.

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
