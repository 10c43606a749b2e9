-- wrk 4.1 done() hook for specloop's benchmark suite: prints one line,
-- "SPECLOOP_WRK {json}", with what the suite reads.  wrk's own --latency
-- table stops at p99; p99.9 and p99.99 come from latency:percentile() here.
-- Latencies are microseconds, as wrk records them.

done = function(summary, latency, requests)
   local e = summary.errors
   local out = string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"max":%d,"mean":%.2f,"stdev":%.2f,' ..
      '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"p9999":%d}}',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.max, latency.mean, latency.stdev,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency:percentile(99.99))
   io.write("SPECLOOP_WRK " .. out .. "\n")
end
