#!lua name=modelsched
-- Part 1 of the cluster's Redis functions, loaded as one library (`store.functions_source` joins
-- the parts in order): the library's header, the keys' names, and the helpers the others share.
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
