-- Part 4 of the cluster's Redis functions (`store.functions_source`): reads: the job list's
-- pages, the index's sweep, the queue depth.

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
