"""The pure parts of `quotaflow bench` (benchmarks/): percentiles, wrk's result line, the table
refresher and the bare endpoint's server command."""

from __future__ import annotations

import json
import time

import psutil
import pytest

from benchmarks import door, stats, tables, wrk


def test_percentiles_interpolate_linearly_in_milliseconds() -> None:
    lat = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    s = stats.summarize(lat)
    assert s["n"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == 100.0
    assert stats.summarize([])["p99_ms"] == 0.0
    assert stats.median([3.0, 1.0, 2.0]) == 2.0


WRK_OUT = """Running 8s test @ http://127.0.0.1:8080/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.56ms    1.02ms  30.11ms   90.00%
  48000 requests in 8.00s, 7.10MB read
WRK_JSON {"requests":48000,"sent":48016,"duration_us":8000000,"non2xx":12,"connect_errors":1,\
"read_errors":2,"write_errors":0,"timeouts":3,"p50_us":2400.0,"p90_us":3100.5,\
"p99_us":9800.0,"max_us":30110.0}
Requests/sec:   6000.00
"""


def test_wrk_result_line_is_parsed_into_rate_latency_and_failures() -> None:
    r = wrk.parse(WRK_OUT)
    assert r.requests == 48000 and r.seconds == 8.0 and r.rps == 6000.0
    assert r.non2xx == 12 and r.socket_errors == 6
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (2.4, 3.1005, 9.8, 30.11)


def test_wrk_output_without_a_result_line_is_an_error_showing_the_output() -> None:
    with pytest.raises(wrk.WrkError, match=r"(?s)no result line.*Requests/sec"):
        wrk.parse("Running 8s test\nRequests/sec: 1\n")


def test_wrk_script_gives_every_request_its_own_ce_id_and_the_bearer_key() -> None:
    assert 'wrk.headers["ce-id"] = run .. "-" .. tid .. "-" .. sent' in wrk.LUA
    assert '"Bearer " .. key' in wrk.LUA
    # the counter that makes ids unique moves on every request
    assert wrk.LUA.index("sent = sent + 1") < wrk.LUA.index('wrk.headers["ce-id"]')


DOC = "# B\n\nintro\n<!-- quotaflow bench: door -->\nold\n<!-- /quotaflow bench: door -->\nkeep\n"


def test_table_refresh_replaces_only_what_is_between_the_markers() -> None:
    out = tables.refresh(DOC, "door", "| new |\n")
    assert out == ("# B\n\nintro\n<!-- quotaflow bench: door -->\n| new |\n"
                   "<!-- /quotaflow bench: door -->\nkeep\n")
    assert tables.refresh(out, "door", "| new |") == out  # idempotent


@pytest.mark.parametrize("text", [
    "no markers at all",
    "<!-- /quotaflow bench: door -->\n<!-- quotaflow bench: door -->\n",
    DOC + DOC,
])
def test_table_refresh_refuses_missing_misordered_or_repeated_markers(text: str) -> None:
    with pytest.raises(ValueError):
        tables.refresh(text, "door", "x")


def _result() -> dict[str, object]:
    rnd = {"rps": 1.0, "non2xx": 0, "socket_errors": 0}
    return {
        "date": "2026-11-29", "mode": "full", "server": "-m gunicorn --workers 2",
        "door": {"connections": 16, "seconds": 8, "rounds": [{"bare": rnd, "admit": rnd}] * 3,
                 "ratio": 0.512, "ratio_min": 0.5, "ratio_max": 0.6, "bare_rps": 5800.0,
                 "admit_rps": 2970.0, "bare_p50_ms": 2.1, "bare_p99_ms": 9.0,
                 "admit_p50_ms": 4.2, "admit_p99_ms": 18.5, "bare_non2xx": 0, "admit_non2xx": 3},
        "sustained": [{"connections": 16, "requests": 6000, "ended": 6000, "non2xx": 0,
                       "admitted_per_s": 1200.0, "seconds_to_all_ended": 5.5,
                       "ended_per_s": 1090.9, "admit_p99_ms": 20.0}],
        "open_loop": {"rate": 500, "seconds": 8, "sent": 4000, "achieved_rate": 499.0,
                      "non2xx": 0, "ended": 4000,
                      "end_to_end": {"p50_ms": 90, "p90_ms": 150, "p99_ms": 240, "max_ms": 300},
                      "admit": {"p50_ms": 3, "p90_ms": 5, "p99_ms": 9, "max_ms": 20}},
        "audit": {"clean": False},
    }


def test_tables_show_the_ratio_the_sustained_rate_and_a_dirty_audit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("\n".join(f"{a}\n{b}" for a, b in map(tables.markers, tables.TABLES)) + "\n")
    tables.refresh_file(md, json.loads(json.dumps(_result())))
    text = md.read_text()
    assert "| **admit / bare** | **0.51** (0.50 to 0.60)" in text
    assert "| admit | 2,970 | 4.2 | 18.5 | 3 |" in text
    assert "| 16 | 6,000 (ended 6,000) | 0 | 1,200 | 5.50 | **1,091** |" in text
    assert "**240**" in text and "NOT clean" in text


def test_the_pipeline_table_shows_the_open_loop_on_the_aged_stack_beside_the_fresh_one(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = _result()
    result["open_loop_aged"] = {  # type: ignore[index]
        **result["open_loop"], "broker_held_requests": 32804,  # type: ignore[dict-item]
        "end_to_end": {"p50_ms": 2687, "p90_ms": 4546, "p99_ms": 5162, "max_ms": 5282}}
    result["open_loop"].update(stack="a fresh stack", broker_held_requests=500)  # type: ignore[union-attr]
    text = tables.pipeline_table(json.loads(json.dumps(result)))
    assert "records of 32,804 requests) | 2687 | 4546 | 5162 | 5282 |" in text
    assert "on a fresh stack, its broker holding the records of 500 requests):" in text
    assert "warm it" not in text  # a result from before fresh stacks says nothing of them
    result["warm_requests"] = 500  # type: ignore[index]
    assert text.replace("| clients", "Each sustained run on a fresh stack, after 500 requests "
                        "to warm it.\n\n| clients") == tables.pipeline_table(result)
    assert "**240**" in text  # the fresh stack's p99 stays the result


def test_bare_endpoint_gets_admits_server_command_with_only_app_and_port_changed() -> None:
    admit = ["py", "-m", "gunicorn", "--workers", "2", "--threads", "8", "--bind",
             "127.0.0.1:8080", "--access-logfile", "-", door.ADMIT_APP]
    assert door.bare_argv(admit, 9999) == [
        "py", "-m", "gunicorn", "--workers", "2", "--threads", "8", "--bind",
        "127.0.0.1:9999", "--access-logfile", "-", door.BARE_APP]
    granian = ["py", "-m", "granian", "--interface", "wsgi", "--factory", "--host",
               "127.0.0.1", "--port", "8080", "--workers", "2", door.ADMIT_APP]
    assert door.bare_argv(granian, 9999) == [*granian[:9], "9999", "--workers", "2",
                                             door.BARE_APP]
    with pytest.raises(ValueError, match="names no"):
        door.bare_argv(["py", "-m", "uvicorn", "other:app"], 1)


def test_cpu_per_request_divides_each_processes_cpu_delta_by_the_requests() -> None:
    from benchmarks import cpu

    got = cpu.per_request_ms({"admit": 1.0, "record": 0.5}, {"admit": 3.0, "record": 0.7}, 1000)
    assert got == {"admit": 2.0, "record": 0.2}


def test_cpu_counts_a_process_and_its_busy_children_and_zero_for_one_gone() -> None:
    import os
    import subprocess
    import sys

    from benchmarks import cpu

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        alone = cpu.cpu_seconds({"child": child.pid})["child"]
        deadline = time.monotonic() + 10
        while cpu.cpu_seconds({"child": child.pid})["child"] < alone + 0.2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with_child = cpu.cpu_seconds({"me": os.getpid()})["me"]
        mine = psutil.Process().cpu_times()
        assert with_child >= mine.user + mine.system + 0.2  # the child's time is in it
    finally:
        child.kill()
        child.wait(10)
    assert cpu.cpu_seconds({"gone": child.pid})["gone"] == 0.0


def test_pipeline_table_reports_the_steps_drain_rate_when_measured(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = _result() | {"drain": {"backlog": 1847, "ended": 1847, "non2xx": 0,
                                    "seconds": 3.0, "drained_per_s": 615.7}}
    assert "backlog of 1,847 requests" in tables.pipeline_table(result)
    assert "**616 requests/s**" in tables.pipeline_table(result)
    assert "drain" not in tables.pipeline_table(_result()).lower()


def test_every_server_candidate_serves_the_app_it_is_given_on_the_port_it_is_given() -> None:
    from benchmarks import servers
    from quotaflow.runtime.served import APP_ENV

    for name, server in servers.CANDIDATES.items():
        for app in (servers.ADMIT_FACTORY, servers.BARE_FACTORY):
            argv = server(8123, app)
            assert servers.argv_port(argv) == 8123, name
            served = argv[-1].removesuffix("()") == app or f"{APP_ENV}={app}" in argv
            assert served, name
    with pytest.raises(ValueError, match="no port"):
        servers.argv_port(["py", "-m", "granian", "app"])


def test_the_servers_table_shows_each_setup_with_its_cpu_and_ratio() -> None:
    row = {"server": "granian 2 x 16", "admit_rps": 512.3, "admit_p50_ms": 30.1,
           "admit_p99_ms": 70.2, "admit_cpu_ms": 1.91, "bare_rps": 3100.0, "bare_cpu_ms": 0.45,
           "ratio": 0.165, "admit_non2xx": 0, "bare_non2xx": 2}
    text = tables.servers_table({"date": "2026-11-29", "mode": "full", "servers": [row]})
    assert "| granian 2 x 16 | **512** | 30.1 / 70.2 | 1.91 | 3,100 | 0.45 | 0.17 | 2 |" in text
    assert text.startswith("2026-11-29, full run")  # a result from before commits were kept


def test_the_tables_name_the_commit_a_result_was_measured_on() -> None:
    result = {"date": "2026-11-29", "commit": "adb42d5", "mode": "full", "servers": []}
    assert tables.servers_table(result).startswith("commit adb42d5, full run")
    door = _result() | {"commit": "adb42d5+changes"}
    assert tables.door_table(json.loads(json.dumps(door))).startswith(
        "commit adb42d5+changes, full run: 16 connections")
