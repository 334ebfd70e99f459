-- Part 5 of the cluster's Redis functions (`store.functions_source`): grouped calls and the
-- registration of every function.

-- many(p, function, n, arg, ..., n, arg, ...): the calls of one event-loop turn to one function
-- (submit, finish, record, watch, attempts), each with its own n arguments after the prefix, in one
-- FCALL: the call's own overhead (its parsing, dispatch and reply, its MULTI/EXEC in the append-only
-- file) is paid once per turn instead of once per job. Each call runs as it would alone (its checks
-- and writes, its answer); one that fails (a Lua error) answers an error and the others still run.
-- What every call would read alike is read once (`turn`), and the ends written are told on `ends` in
-- one message (ids separated by spaces).
-- -> one answer per call, in order
local BATCHED = {submit = submit, finish = finish, record = record, watch = watch, attempts = attempts}
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
redis.register_function('modelsched_record', alone(record))
redis.register_function('modelsched_cancel', alone(cancel))
redis.register_function('modelsched_reclaim', alone(reclaim))
redis.register_function('modelsched_refresh', alone(refresh))
redis.register_function('modelsched_attempts', alone(attempts))
redis.register_function('modelsched_expire', alone(expire))
redis.register_function('modelsched_jobs', alone(jobs))
redis.register_function('modelsched_watch', alone(watch))
redis.register_function('modelsched_sweep', alone(sweep))
redis.register_function{function_name = 'modelsched_depth', callback = alone(depth), flags = {'no-writes'}}
