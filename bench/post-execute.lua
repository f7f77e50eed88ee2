-- wrk script of bench/bench_http.py: authenticated POST /execute of variable.get,
-- the same request as the peer's post-execute.lua (shared/peers/platypush/).
-- The token comes from $BENCH_TOKEN. Every reply is checked for a 200 carrying a real
-- "output"; machine-readable LUA_* lines are printed at the end.
wrk.method = "POST"
wrk.body = '{"type":"request","action":"variable.get","args":{"name":"bench"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  good = 0
  bad = 0
end

function response(status, headers, body)
  if status == 200 and body and body:find('"output"', 1, true) then
    good = good + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local g, b = 0, 0
  for _, t in ipairs(threads) do
    g = g + (t:get("good") or 0)
    b = b + (t:get("bad") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "LUA_SUM requests=%d duration_us=%d good=%d bad=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, g, b, e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format(
    "LUA_LAT p50_us=%d p75_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%d\n",
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
