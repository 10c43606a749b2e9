-- wrk 4.1 script for specloop's constant-rate latency cell (wrk2's idea):
-- run with one connection per thread (-tN -cN).  Each connection sends on
-- a fixed schedule, SPECLOOP_RATE requests/s over all of them, whatever
-- the server does.  A request's latency counts from the moment the
-- schedule wanted it sent: when the previous response came back late and
-- the slot had already passed, the wait is part of the latency (the
-- "coordinated omission" that a closed-loop client hides); when the
-- connection sat waiting for its slot, it counts from the actual send, so
-- that wrk's millisecond timers add nothing.  Requests whose slot falls in
-- the first SPECLOOP_RATE_SETTLE_US are sent but not counted (new
-- connections settling).  done() prints one line, "SPECLOOP_RATE {json}";
-- latencies in microseconds.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } specloop_timespec;
int clock_gettime(int clk, specloop_timespec *ts);
]]
local ts = ffi.new("specloop_timespec")
local function now_us()
   ffi.C.clock_gettime(1, ts)   -- CLOCK_MONOTONIC
   return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local threads = {}
function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

local interval, next_slot, start_us, waited, counted, was_late, settle_until
lat = {}      -- this connection's latencies (read by done() through thread:get)
late = 0      -- answered requests that were sent after their slot had passed

function init(args)
   local rate = tonumber(os.getenv("SPECLOOP_RATE"))
   local conns = tonumber(os.getenv("SPECLOOP_RATE_CONNS"))
   interval = conns * 1e6 / rate
   settle_until = now_us() + (tonumber(os.getenv("SPECLOOP_RATE_SETTLE_US")) or 0)
   -- connections spread their slots evenly over one interval
   next_slot = now_us() + interval * (id / conns)
   waited = true
end

function delay()
   local wait = next_slot - now_us()
   waited = wait > 0
   return wait > 0 and math.floor(wait / 1000) or 0
end

function request()
   local now = now_us()
   counted = next_slot >= settle_until
   was_late = not waited
   if waited then
      start_us = now   -- sat waiting for its slot: from the actual send
   else
      start_us = next_slot   -- behind schedule: count from the slot
   end
   next_slot = next_slot + interval
   return wrk.request()
end

function response(status, headers, body)
   -- counted when answered (one request in flight per connection), so that
   -- a request still unanswered at the end is neither late nor a response
   if counted then
      lat[#lat + 1] = now_us() - start_us
      if was_late then late = late + 1 end
   end
end

done = function(summary, latency, requests)
   local all = {}
   local nlate = 0
   for _, t in ipairs(threads) do
      local l = t:get("lat")
      for i = 1, #l do all[#all + 1] = l[i] end
      nlate = nlate + t:get("late")
   end
   table.sort(all)
   local function pct(p)
      if #all == 0 then return 0 end
      local i = math.ceil(#all * p / 100)
      if i < 1 then i = 1 end
      return all[i]
   end
   local e = summary.errors
   io.write(string.format(
      'SPECLOOP_RATE {"responses":%d,"late":%d,"duration_us":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,"max":%.1f}}\n',
      #all, nlate, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      pct(50), pct(90), pct(99), pct(99.9), #all > 0 and all[#all] or 0))
end
