-- wrk script for bench/run.py: POST one JSON body, optionally with a different API key per request and a
-- think time per connection, and print a machine-readable summary.
--
-- Environment (set by bench/lib/wrk.py):
--   BENCH_BODY       the request body (JSON)
--   BENCH_HEADERS    extra headers, one "Name: value" per line
--   BENCH_KEYS_FILE  optional: a file with one API key per line; each request takes the next key (sent as
--                    "Authorization: Bearer <key>").
--   BENCH_BODIES_FILE optional: a file with one JSON body per line; each request takes the next body (so a
--                    gateway cache keyed on content cannot answer every request from one entry).
--                    Requests are pre-built when the script loads, so the per-request cost in the load
--                    generator is one table lookup.
--   BENCH_THINK_MS   optional: mean pause between a response and the next request on a connection, drawn
--                    uniformly from [0.5, 1.5] x mean so connections drift apart. wrk times a request from its
--                    write to the end of its response, so the pause is not part of the latency.
-- done() prints one line: BENCH_WRK {json}, latencies in microseconds.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^%s*([^:]+):%s*(.-)%s*$")
  if name then
    wrk.headers[name] = value
  end
end

local function read_lines(path)
  local lines = {}
  if path and path ~= "" then
    for line in io.lines(path) do
      if line ~= "" then
        lines[#lines + 1] = line
      end
    end
  end
  return lines
end

-- With a keys file and/or a bodies file, pre-build max(#keys, #bodies) requests (key i and body i, each list
-- cycled) and hand them out in turn; without either, wrk's static request is used. This happens in init(),
-- which wrk calls after it has added the Host header to wrk.headers.
local keys = read_lines(os.getenv("BENCH_KEYS_FILE"))
local bodies = read_lines(os.getenv("BENCH_BODIES_FILE"))
local prebuilt = nil
local next_index = 1

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  if #keys == 0 and #bodies == 0 then
    return
  end
  prebuilt = {}
  for i = 1, math.max(#keys, #bodies) do
    local headers = {}
    for name, value in pairs(wrk.headers) do
      headers[name] = value
    end
    if #keys > 0 then
      headers["Authorization"] = "Bearer " .. keys[(i - 1) % #keys + 1]
    end
    local body = #bodies > 0 and bodies[(i - 1) % #bodies + 1] or wrk.body
    prebuilt[i] = wrk.format("POST", nil, headers, body)
  end
  next_index = math.random(#prebuilt)
end

if #keys > 0 or #bodies > 0 then
  function request()
    local req = prebuilt[next_index]
    next_index = next_index % #prebuilt + 1
    return req
  end
end

local think = tonumber(os.getenv("BENCH_THINK_MS") or "0") or 0
if think > 0 then
  function delay()
    return math.floor(think * (0.5 + math.random()))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_WRK {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"lat_mean":%.1f,"lat_max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
