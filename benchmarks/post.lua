-- wrk script of benchmarks/run.py: POST the bodies of file $BENCH_BODY_FILE (one per line, sent
-- in turn) with Content-Type $BENCH_CONTENT_TYPE, and print the summary as one JSON line
-- (latencies in microseconds).
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")

local bodies = {}
for line in io.lines(os.getenv("BENCH_BODY_FILE")) do
  bodies[#bodies + 1] = line
end
local sent = 0

request = function()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[(sent % #bodies) + 1])
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
