-- wrk script: POST request bodies read from files, taking the next one for every request.
-- wrk -s bench/rotate.lua URL -- <content-type> <file listing one body path per line>
local bodies = {}
local index = 0
local content_type

function init(args)
  content_type = args[1]
  for path in io.lines(args[2]) do
    local file = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = file:read("*a")
    file:close()
  end
  -- Threads start at different bodies so that they do not send the same sequence.
  index = math.random(#bodies)
end

function request()
  index = index % #bodies + 1
  return wrk.format("POST", nil, { ["Content-Type"] = content_type }, bodies[index])
end
