-- wrk script for load/bench.py.
--   wrk ... -s load/wrk/bench.lua http://127.0.0.1:PORT/items/42           (GET)
--   wrk ... -s load/wrk/bench.lua http://127.0.0.1:PORT/items -- POST      (POST a new item)
-- done() prints one machine-readable line, "WRK_JSON {...}" (latencies in microseconds).

function init(args)
  if args[1] == "POST" then
    wrk.method = "POST"
    wrk.body = '{"name":"bench item","price":9.99,"quantity":3}'
    wrk.headers["Content-Type"] = "application/json"
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_mean_us":%.1f,"lat_max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
