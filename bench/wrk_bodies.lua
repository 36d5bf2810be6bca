-- wrk script for bench/loadgen.py: each request POSTs one JSON body picked at random from the
-- file named by $WRK_BODIES (one body per line); without $WRK_BODIES it sends plain GETs.
-- At the end it prints one line "WRKJSON {...}" with wrk's own counters and latency percentiles
-- (microseconds), which loadgen.py reads next to the --latency text.
local bodies = {}
local thread_count = 0

function setup(thread)
   thread_count = thread_count + 1
   thread:set("thread_id", thread_count)
end

function init(args)
   local path = os.getenv("WRK_BODIES")
   if path and path ~= "" then
      for line in io.lines(path) do
         if #line > 0 then bodies[#bodies + 1] = line end
      end
      wrk.method = "POST"
      wrk.headers["Content-Type"] = "application/json"
   end
   math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
   if #bodies == 0 then
      return wrk.format(nil, nil, nil, nil)
   end
   return wrk.format(nil, nil, nil, bodies[math.random(#bodies)])
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, ' ..
      '"write_errors": %d, "status_errors": %d, "timeouts": %d, "mean_us": %.1f, "p50_us": %d, ' ..
      '"p90_us": %d, "p95_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(95),
      latency:percentile(99), latency:percentile(99.9), latency.max))
end
