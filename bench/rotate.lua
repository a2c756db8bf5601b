-- wrk script: POST request bodies read from files, taking the next one for every request.
-- wrk -s bench/rotate.lua URL -- <content-type> <file listing one body per line>
-- A listing line is the body's path, then optionally tab-separated `Name: value` headers
-- sent with that body only (an Open Inference Protocol binary body carries the length of
-- its JSON part in one).
local bodies = {}
local headers = {}
local index = 0

function init(args)
  local content_type = args[1]
  for line in io.lines(args[2]) do
    local path, extra = line:match("^([^\t]+)(.*)$")
    local file = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = file:read("*a")
    file:close()
    local these = { ["Content-Type"] = content_type }
    for name, value in extra:gmatch("\t([^:\t]+):%s*([^\t]*)") do
      these[name] = value
    end
    headers[#headers + 1] = these
  end
  -- Threads start at different bodies so that they do not send the same sequence.
  index = math.random(#bodies)
end

function request()
  index = index % #bodies + 1
  return wrk.format("POST", nil, headers[index], bodies[index])
end
