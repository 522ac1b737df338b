-- wrk script for load/soak.py: a steady read-mostly CRUD mix over items 1..N. Every item it
-- creates it deletes again (ids from the Location header), so the table, and with it the cost
-- of a list, stays the same size for the whole soak.
--   wrk ... -s load/wrk/soak.lua http://127.0.0.1:PORT -- <items> <delay_ms>
-- <delay_ms> > 0 paces every connection (one request per delay), which holds the rate near
-- connections * 1000 / delay_ms; 0 runs flat out (to measure capacity).
-- done() prints one machine-readable line, "WRK_JSON {...}" (latencies in microseconds).

local items = 100
local pause = 0
local counter = 0
local created = {}

function init(args)
  items = tonumber(args[1]) or 100
  pause = tonumber(args[2]) or 0
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function delay()
  return pause
end

function request()
  counter = counter + 1
  local roll = math.random(100)
  local id = math.random(items)
  if roll <= 60 then
    return wrk.format("GET", "/items/" .. id)
  elseif roll <= 85 then
    return wrk.format("GET", "/items?limit=20&offset=" .. math.random(0, items))
  elseif roll <= 90 then
    return wrk.format("POST", "/items", {["Content-Type"] = "application/json"},
      '{"name":"soak ' .. counter .. '","price":1.5,"quantity":2}')
  elseif roll <= 95 and #created > 0 then
    return wrk.format("DELETE", table.remove(created, 1))
  else
    return wrk.format("PATCH", "/items/" .. id, {["Content-Type"] = "application/json"},
      '{"quantity":' .. counter .. '}')
  end
end

function response(status, headers, body)
  local location = headers["Location"] or headers["location"]
  if status == 201 and location then
    table.insert(created, location)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
