-- wrk script for bench/run.py: optional pacing and a JSON summary line on exit.
-- WRK_DELAY_MS > 0 makes each connection wait about that long between requests (a rate of
-- about connections * 1000 / WRK_DELAY_MS requests per second; wrk has no -R of its own).
-- Each wait is drawn uniformly from [0.5, 1.5] x WRK_DELAY_MS: with one fixed wait, the
-- connections, which all start together, stay in lockstep and arrive in bursts of all of
-- them at once, so the p99 measured queueing behind the burst (64 requests at once is
-- momentarily far above the rate asked for) rather than the server at that rate.
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if delay_ms > 0 then
  math.randomseed(os.time())
  function delay()
    return math.floor(delay_ms * (0.5 + math.random()) + 0.5)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
