// Lua scripts of the Redis pair store, loaded once per client with ioredis defineCommand (EVALSHA, falling back to
// EVAL after a Redis restart). Every key a script touches arrives in KEYS, so the scripts are Cluster-correct:
// the store gives all keys one hash tag, hence one slot.
//
// Per bucket there are two keys: a hash of totals (n normal, a abnormal, u untracked pairs) and a sorted set of
// sources whose score encodes both counts as abnormal * RANK_FACTOR + normal. One ZUNIONSTORE then ranks the
// window by abnormal desc, normal desc, and the counts are decoded from the score. The encoding is exact while a
// source has fewer than RANK_FACTOR normal and 2^27 abnormal pairs in one window (both far beyond reach: 2^26 is
// 6.7 million normal pairs per second from one address over a 10 s window).

/** 2^26: the base of the rank score; see the header comment for the exactness bound. */
export const RANK_FACTOR = 67_108_864;

/**
 * Adds one batch to one bucket.
 * KEYS[1] totals hash, KEYS[2] sources sorted set.
 * ARGV[1] expiry seconds, ARGV[2] max sources per bucket, ARGV[3] batch normal total, ARGV[4] batch abnormal total,
 * ARGV[5] pairs the caller already could not attribute, then triples: source, rank increment (exact decimal string
 * computed by the caller, because Lua 5.1 prints numbers with 14 significant digits), pairs of that source.
 * Returns the number of sources the bucket tracks.
 */
export const ADD_PAIRS_LUA = `
local maxSources = tonumber(ARGV[2])
local untracked = tonumber(ARGV[5])
local tracked = redis.call('ZCARD', KEYS[2])
for i = 6, #ARGV, 3 do
  local source = ARGV[i]
  local known = redis.call('ZSCORE', KEYS[2], source)
  if known or tracked < maxSources then
    redis.call('ZINCRBY', KEYS[2], ARGV[i + 1], source)
    if not known then tracked = tracked + 1 end
  else
    untracked = untracked + tonumber(ARGV[i + 2])
  end
end
redis.call('HINCRBY', KEYS[1], 'n', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'a', ARGV[4])
if untracked > 0 then redis.call('HINCRBY', KEYS[1], 'u', string.format('%d', untracked)) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if tracked > 0 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return tracked
`;

/**
 * Sums a window and ranks its sources.
 * KEYS[1..N] totals hashes, KEYS[N+1..2N] sources sorted sets, KEYS[2N+1] scratch key (deleted before returning;
 * scripts run atomically, so one fixed scratch name per prefix is safe).
 * ARGV[1] N, ARGV[2] top sources wanted, ARGV[3] RANK_FACTOR.
 * Returns { normal, abnormal, untracked, source1, normal1, abnormal1, source2, ... }.
 * Weights of -1 let ZRANGE's ascending order, which breaks ties by member ascending, give
 * abnormal desc, normal desc, source asc: the order of compareSources.
 */
export const WINDOW_PAIRS_LUA = `
local count = tonumber(ARGV[1])
local top = tonumber(ARGV[2])
local factor = tonumber(ARGV[3])
local normal, abnormal, untracked = 0, 0, 0
for i = 1, count do
  local totals = redis.call('HMGET', KEYS[i], 'n', 'a', 'u')
  normal = normal + (tonumber(totals[1]) or 0)
  abnormal = abnormal + (tonumber(totals[2]) or 0)
  untracked = untracked + (tonumber(totals[3]) or 0)
end
local reply = { normal, abnormal, untracked }
if top > 0 then
  local scratch = KEYS[2 * count + 1]
  local union = { 'ZUNIONSTORE', scratch, count }
  for i = count + 1, 2 * count do union[#union + 1] = KEYS[i] end
  union[#union + 1] = 'WEIGHTS'
  for i = 1, count do union[#union + 1] = -1 end
  redis.call(unpack(union))
  local ranked = redis.call('ZRANGE', scratch, 0, top - 1, 'WITHSCORES')
  redis.call('DEL', scratch)
  for j = 1, #ranked, 2 do
    local score = -tonumber(ranked[j + 1])
    local sourceAbnormal = math.floor(score / factor)
    reply[#reply + 1] = ranked[j]
    reply[#reply + 1] = score - sourceAbnormal * factor
    reply[#reply + 1] = sourceAbnormal
  end
end
return reply
`;
