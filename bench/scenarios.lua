-- wrk script for every benchmark scenario; bench/run.sh passes the arguments.
--
--   wrk ... -s scenarios.lua URL -- get PATH
--   wrk ... -s scenarios.lua URL -- post PATH BODY        (also: put PATH BODY);
--                                        in a post body, {n} becomes a unique number
--   wrk ... -s scenarios.lua URL -- send SEED_DIR ids|chain
--   wrk ... -s scenarios.lua URL -- mixed SEED_DIR ids|chain
--
-- `send` posts a message to 3 recipients: with `ids` as one POST /messages
-- carrying recipient_ids (mailroom), with `chain` as POST /messages followed
-- by 3 POST /message_recipients (the original design, which has no
-- recipient_ids). `mixed` is 70% pulls (unread and mailbox, limit 100), 20%
-- sends and 10% mark-read over the seeded agents.
-- done() prints: RESULT requests duration_s p50_ms p99_ms errors

local json = { ["Content-Type"] = "application/json" }
-- bench/run.sh sets the admin key (mailroom's default MAILROOM_AUTH=required);
-- every request of both sides carries it, the reference ignores it.
local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization then
  json["Authorization"] = authorization
  wrk.headers["Authorization"] = authorization
end
local mode, path, body, chain
local agents = {}
local queue = {}     -- recipient requests ready to send
local pending = {}   -- recipient sets of chained sends waiting for their message id
local counter = 0

local function read_agents(dir)
  for line in io.lines(dir .. "/agents.txt") do
    if #line > 0 then agents[#agents + 1] = line end
  end
end

local function send_request()
  local sender = agents[math.random(#agents)]
  local picked = {}
  while #picked < 3 do
    local r = agents[math.random(#agents)]
    if r ~= sender then picked[#picked + 1] = r end
  end
  counter = counter + 1
  local content = '"content":"benchmark send ' .. counter .. '","sender_id":"' .. sender .. '"'
  if chain then
    pending[#pending + 1] = picked
    return wrk.format("POST", "/messages", json, "{" .. content .. "}")
  end
  local ids = '["' .. table.concat(picked, '","') .. '"]'
  return wrk.format("POST", "/messages", json, "{" .. content .. ',"recipient_ids":' .. ids .. "}")
end

local function mixed_request()
  local roll = math.random(100)
  local agent = agents[math.random(#agents)]
  if roll <= 35 then
    return wrk.format("GET", "/agents/" .. agent .. "/messages/unread?limit=100")
  elseif roll <= 70 then
    return wrk.format("GET", "/agents/" .. agent .. "/messages?limit=100")
  elseif roll <= 90 then
    return send_request()
  end
  return wrk.format("PUT", "/agents/" .. agent .. "/messages/mark-read", json,
    '{"read_up_to_date":"2100-01-01T00:00:00Z"}')
end

-- Recipient rows of a chained send wait here until their message id is known.
local function chained_response(status, headers, response_body)
  -- Only a created message has content; a created recipient row has none.
  if not response_body:find('"content"', 1, true) then return end
  local message_id = response_body:match('"message_id":"([%x%-]+)"')
  if message_id and #pending > 0 then
    for _, r in ipairs(table.remove(pending, 1)) do
      queue[#queue + 1] = wrk.format("POST", "/message_recipients", json,
        '{"message_id":"' .. message_id .. '","recipient_id":"' .. r .. '"}')
    end
  end
end

-- Each thread gets a number, so generated names are unique across threads.
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

function init(args)
  mode = args[1]
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  if mode == "get" then
    path = args[2]
  elseif mode == "post" or mode == "put" then
    path, body = args[2], args[3]
  elseif mode == "send" or mode == "mixed" then
    read_agents(args[2])
    chain = args[3] == "chain"
    if chain then response = chained_response end
  else
    error("unknown mode " .. tostring(mode))
  end
end

function request()
  if #queue > 0 then return table.remove(queue, 1) end
  if mode == "get" then return wrk.format("GET", path) end
  if mode == "post" then
    -- "{n}" in a body becomes a number unique in this run (the original
    -- design refuses a second agent of the same name).
    counter = counter + 1
    local unique = tostring(thread_id or 0) .. "-" .. tostring(counter)
    return wrk.format("POST", path, json, (body:gsub("{n}", unique)))
  end
  if mode == "put" then return wrk.format("PUT", path, json, body) end
  if mode == "send" then return send_request() end
  return mixed_request()
end

function done(summary, latency, requests)
  local failed = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.status
  io.write(string.format("RESULT %d %.3f %.3f %.3f %d\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000, failed))
end
