"""Driving wrk: the Lua scripts (a unique `ce-id` per request, a Bearer key, an optional request
limit; or requests paced to a fixed rate, an open loop) and parsing the one JSON line their
`done` prints."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# `done` of both scripts: sums the threads and prints one JSON line, the only line parse() reads.
DONE = r'''function done(summary, latency, requests)
  local answered_all, bad_all, sent_all = 0, 0, 0
  for _, t in ipairs(threads) do
    answered_all = answered_all + t:get("answered")
    bad_all = bad_all + t:get("bad")
    sent_all = sent_all + t:get("sent")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"sent":%d,"duration_us":%d,"non2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%.1f,"p90_us":%.1f,' ..
    '"p99_us":%.1f,"max_us":%.1f}\n',
    answered_all, sent_all, summary.duration, bad_all, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
'''

# The start of both scripts: the settings from the environment, the threads (for `done`) and
# the CloudEvent POST every request is.
COMMON = r'''
local threads = {}
local key = os.getenv("QF_BENCH_KEY") or ""
local source = os.getenv("QF_BENCH_SOURCE") or "/bench"
local body = os.getenv("QF_BENCH_BODY") or "{}"
local n_threads = tonumber(os.getenv("QF_BENCH_THREADS") or "1")

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local function cloudevent_post()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
  wrk.headers["ce-specversion"] = "1.0"
  wrk.headers["ce-type"] = "dev.quotaflow.inference.requested"
  wrk.headers["ce-source"] = source
  wrk.body = body
end
'''

# Per thread: `sent` counts requests (so every ce-id is unique: run prefix, thread, counter),
# `answered` and `bad` count responses; a thread stops once it has `QF_BENCH_LIMIT` answers.
LUA = COMMON + r'''
local run = os.getenv("QF_BENCH_RUN") or tostring(os.time())
local total_limit = tonumber(os.getenv("QF_BENCH_LIMIT") or "0")

function init(args)
  sent, answered, bad = 0, 0, 0
  limit = 0
  if total_limit > 0 then limit = math.ceil(total_limit / n_threads) end
  cloudevent_post()
end

function request()
  sent = sent + 1
  wrk.headers["ce-id"] = run .. "-" .. tid .. "-" .. sent
  return wrk.format()
end

function response(status, headers, body)
  answered = answered + 1
  if status < 200 or status > 299 then bad = bad + 1 end
  if limit > 0 and answered >= limit then wrk.thread:stop() end
end

''' + DONE

# An open loop: request i (a "slot", 0 <= i < QF_BENCH_LIMIT) is due at QF_BENCH_START_US +
# i / QF_BENCH_RATE seconds, whatever the answers to the others. Thread t of T takes slots t-1,
# t-1+T, ...; a connection free to send asks `delay` for the thread's next slot and waits until
# it is due (not at all when late), and `request` gives it that slot, named in its ce-id with
# its due time: "SOURCE/slot/due_us". A late request is late against its due time, so the
# latency read from the ce-id counts the system's lateness, never hides it. The thread's slots
# wait in a queue between `delay` and `request` (wrk calls them in that order per connection,
# and due times only grow, so the connection that waits least sends first). LuaJIT's ffi gives
# the microsecond clock Lua lacks.
OPEN_LUA = COMMON + r'''
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } qf_timeval;
int gettimeofday(qf_timeval *tv, void *tz);
]]
local tv = ffi.new("qf_timeval")
local function now_us()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
end
local rate = tonumber(os.getenv("QF_BENCH_RATE"))
local total = tonumber(os.getenv("QF_BENCH_LIMIT"))
local start_us = tonumber(os.getenv("QF_BENCH_START_US"))

function init(args)
  sent, answered, bad = 0, 0, 0
  slot = tid - 1
  due, head, tail = {}, 1, 0
  cloudevent_post()
end

function delay()
  if slot >= total then return 3600000 end  -- all sent: idle until wrk's duration ends
  local at = start_us + math.floor(slot * 1000000 / rate)
  tail = tail + 1
  due[tail] = {slot, at}
  slot = slot + n_threads
  return math.max(0, math.floor((at - now_us()) / 1000))
end

function request()
  local s = due[head]
  if s == nil then  -- wrk's first call, building the request before any delay
    return wrk.format()
  end
  due[head] = nil
  head = head + 1
  sent = sent + 1
  wrk.headers["ce-id"] = string.format("%s/%d/%.0f", source, s[1], s[2])
  return wrk.format()
end

function response(status, headers, body)
  answered = answered + 1
  if status < 200 or status > 299 then bad = bad + 1 end
end

''' + DONE


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: answered requests, their rate, latency percentiles (ms) and failures."""

    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def parse(output: str) -> WrkResult:
    """The result in wrk's output (the `WRK_JSON` line the script's `done` prints)."""
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            d = json.loads(line.removeprefix("WRK_JSON "))
            return WrkResult(
                requests=int(d["requests"]), seconds=d["duration_us"] / 1e6,
                non2xx=int(d["non2xx"]),
                socket_errors=sum(int(d[k]) for k in ("connect_errors", "read_errors",
                                                      "write_errors", "timeouts")),
                p50_ms=d["p50_us"] / 1000, p90_ms=d["p90_us"] / 1000,
                p99_ms=d["p99_us"] / 1000, max_ms=d["max_us"] / 1000)
    raise WrkError("wrk printed no result line:\n" + output[-2000:])


def binary() -> str:
    """The wrk on PATH, or a `WrkError` saying how to get it."""
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed: run infra/local/setup.sh "
                       "(Debian: apt-get install wrk)")
    return found


def command(url: str, seconds: float, connections: int, key: str, script_dir: Path,
            source: str = "/bench", limit: int = 0, threads: int = 2, run_id: str = "r",
            body: str = "") -> tuple[list[str], dict[str, str]]:
    """wrk's argv and environment: load `url` for `seconds` (each thread stops after its share
    of `limit` answers, if given) over `connections`."""
    threads = max(1, min(threads, connections))
    script = script_dir / "bench.lua"
    script.write_text(LUA)
    env = {**os.environ, "QF_BENCH_KEY": key, "QF_BENCH_SOURCE": source,
           "QF_BENCH_LIMIT": str(limit), "QF_BENCH_THREADS": str(threads),
           "QF_BENCH_RUN": run_id, "QF_BENCH_BODY": body}
    argv = [binary(), "-t", str(threads), "-c", str(connections), "-d",
            f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url]
    return argv, env


def open_command(url: str, rate: float, total: int, connections: int, key: str,
                 script_dir: Path, source: str, start_at: float, body: str = "",
                 threads: int = 2) -> tuple[list[str], dict[str, str]]:
    """wrk's argv and environment for an open loop: `total` requests due at `rate` a second
    from `start_at` (epoch seconds), each on whichever of `connections` is free."""
    threads = max(1, min(threads, connections))
    script = script_dir / "open.lua"
    script.write_text(OPEN_LUA)
    env = {**os.environ, "QF_BENCH_KEY": key, "QF_BENCH_SOURCE": source,
           "QF_BENCH_RATE": repr(float(rate)), "QF_BENCH_LIMIT": str(total),
           "QF_BENCH_THREADS": str(threads), "QF_BENCH_START_US": str(int(start_at * 1e6)),
           "QF_BENCH_BODY": body}
    # wrk runs for whole seconds: until the last slot is due, plus time for its answer.
    seconds = max(0.0, start_at - time.time()) + total / rate + 2
    argv = [binary(), "-t", str(threads), "-c", str(connections), "-d",
            f"{math.ceil(seconds)}s", "--timeout", "10s", "-s", str(script), url]
    return argv, env


def due_at(ce_id: str) -> tuple[int, float]:
    """The slot and due time (epoch seconds) the open loop named in `ce_id`."""
    _, slot, due_us = ce_id.rsplit("/", 2)
    return int(slot), int(due_us) / 1e6


def run(url: str, seconds: float, connections: int, key: str, script_dir: Path,
        source: str = "/bench", run_id: str = "r", body: str = "") -> WrkResult:
    """Load `url` with wrk for `seconds` over `connections`; its result."""
    argv, env = command(url, seconds, connections, key, script_dir, source, run_id=run_id,
                        body=body)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                          timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {proc.stderr[-1000:]}")
    return parse(proc.stdout)
