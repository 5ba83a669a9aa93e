-- Shared by the scripts that can end a batch (apply.lua, and closing a batch whose
-- writer died): it is done at `at`, and it and its lists are kept `ttl` seconds more.
local function batch_done(key, at, ttl)
  redis.call('HSET', key, 'done', at)
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
    redis.call('EXPIRE', key .. ':tasks', ttl)
    -- A finished batch's events are for resuming clients and webhook retries: an hour
    -- is plenty, and they would cost more than the records themselves.
    redis.call('EXPIRE', key .. ':ev', math.min(ttl, 3600))
  end
end
