-- wrk script of bench/hooks_bench.py. Arguments (after `--`): target ("hook" or "empty"), body file, token file,
-- number of wrk threads.
-- "hook": POST the CDS request with a distinct pre-signed JWT per call (the service refuses a replayed jti);
-- each wrk thread takes every n-th token, so threads never share one. "empty": GET the empty route.
-- done() prints one line "BENCH {json}" with the counts and the latency percentiles in microseconds.

local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  target = args[1]
  tokens = {}
  next_token = 1
  warned = false
  if target == "hook" then
    body = slurp(args[2])
    local nthreads = tonumber(args[4]) or 1
    local n = 0
    for line in io.lines(args[3]) do
      if line ~= "" then
        if n % nthreads == id then
          table.insert(tokens, line)
        end
        n = n + 1
      end
    end
  end
end

function request()
  if target ~= "hook" then
    return wrk.format("GET", nil, nil, nil)
  end
  local token = tokens[next_token]
  if token == nil then
    if not warned then
      io.stderr:write("tokens exhausted\n")
      warned = true
    end
    token = tokens[#tokens]
  end
  next_token = next_token + 1
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json",
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
