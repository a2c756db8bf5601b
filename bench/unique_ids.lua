-- wrk script: POST bodies read from files, each "__ID__" in them replaced by a number no
-- request has carried before, so that every payment is a new one (not a retry), and each
-- "__AT:<epoch seconds>__" by that moment (UTC, with microseconds) moved on by
-- `STEP_S` for every earlier send of the same body by this thread: a body sent again is
-- its card paying again some hours later, as cards do, so that no card's windows grow
-- past a real card's however long the run.
-- wrk -s bench/unique_ids.lua URL -- <content-type> <file listing one body per line> <first id>
local bodies = {}
local headers = {}
local index = 0
local next_id = 0
local threads = 0
local micros = 0
local sends = {} -- per body, this thread's sends so far
local STEP_S = 8 * 3600 -- about a card's pace in the dataset (3.6 payments a day)

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

local function moment(shift)
  return function(epoch)
    micros = (micros + 1) % 1000000
    -- Threads a minute apart, so that two of them sending one body are not one instant.
    local at = tonumber(epoch) + shift + thread_number * 60
    return os.date("!%Y-%m-%dT%H:%M:%S", at) .. string.format(".%06d", micros)
  end
end

function request()
  index = index % #bodies + 1
  local sent = sends[index] or 0
  sends[index] = sent + 1
  local body = bodies[index]:gsub('"__ID__"', fresh_id):gsub("__AT:(%d+)__", moment(sent * STEP_S))
  return wrk.format("POST", nil, headers, body)
end
