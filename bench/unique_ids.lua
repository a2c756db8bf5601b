-- wrk script: POST bodies read from files, each "__ID__" in them replaced by a number no
-- request has carried before, so that every payment is a new one (not a retry), and each
-- "__US__" by the next microseconds (000000-999999), so that one body sent again is not
-- the same card paying many times at the same instant.
-- wrk -s bench/unique_ids.lua URL -- <content-type> <file listing one body per line> <first id>
local bodies = {}
local headers = {}
local index = 0
local next_id = 0
local threads = 0
local micros = 0

function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

function init(args)
  headers = { ["Content-Type"] = args[1] }
  for path in io.lines(args[2]) do
    local file = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = file:read("*a")
    file:close()
  end
  -- A billion ids per thread, after those of earlier runs (the caller moves args[3] on).
  next_id = tonumber(args[3]) + thread_number * 1e9
  index = math.random(#bodies)
end

local function fresh_id()
  next_id = next_id + 1
  return string.format("%.0f", next_id)
end

local function next_micros()
  micros = (micros + 1) % 1000000
  return string.format("%06d", micros)
end

function request()
  index = index % #bodies + 1
  local body = bodies[index]:gsub('"__ID__"', fresh_id):gsub("__US__", next_micros)
  return wrk.format("POST", nil, headers, body)
end
