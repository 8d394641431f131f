"""`quotaflow dev status [--json]`, `quotaflow dev restart NAME` and `quotaflow dev scale STEP
N`: a running stack seen and handled from outside, through its state file (written by its
supervisor, `DevStack`) and, for `scale`, a request file its `dev up` process applies."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from quotaflow.adapters import kafka
from quotaflow.devstack import control, knative_mode, members
from quotaflow.devstack.process import pid_alive, read_state
from quotaflow.runtime.steps import CONSUMER_STEPS, load_step
from quotaflow.settings import Settings


def _say(msg: str) -> None:
    print(f"[quotaflow] {msg}", file=sys.stderr, flush=True)


def register(dsub: Any) -> None:
    """Add `status`, `restart` and `scale` to `quotaflow dev`'s actions."""
    st = dsub.add_parser("status", help="show the running stack's processes and URLs")
    st.add_argument("--state-dir", type=Path, default=Path(".quotaflow/dev"))
    st.add_argument("--json", action="store_true",
                    help="as JSON: every process (brokers as kafka-1 ... kafka-N) with its "
                    "pid, whether it runs and its restarts; with --knative, the functions and "
                    "their state (ready, starting, scaled-to-zero)")
    st.set_defaults(func=_status)
    rs = dsub.add_parser("restart", help="restart one process of the running stack (a step, "
                         "or a broker: kafka-2); its supervisor starts it again")
    rs.add_argument("name", help="the process, as `dev status` names it")
    rs.add_argument("--state-dir", type=Path, default=Path(".quotaflow/dev"))
    rs.add_argument("--timeout", type=float, default=120,
                    help="seconds to wait until it runs again (default 120)")
    rs.set_defaults(func=_restart)
    sc = dsub.add_parser("scale", help="run COUNT members of a consumer step's group in the "
                         "running stack (Apache Kafka): members join, or leave gracefully")
    sc.add_argument("step", help="estimate, reserve, infer, settle or record")
    sc.add_argument("count", type=int, help="members wanted (1 to the topics' partitions)")
    sc.add_argument("--state-dir", type=Path, default=Path(".quotaflow/dev"))
    sc.add_argument("--timeout", type=float, default=60,
                    help="seconds to wait until that many run (default 60)")
    sc.set_defaults(func=_scale)


def _status(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    if state is None or control.running_state(args.state_dir) is None:
        print("not running")
        return 1
    pids: dict[str, int] = state["pids"]  # type: ignore[assignment]
    restarts: dict[str, int] = state.get("restarts", {})  # type: ignore[assignment]
    supervisor = state.get("supervisor")
    if args.json:
        print(json.dumps({
            "broker": state.get("broker"), "brokers": state.get("brokers", []),
            "admit_url": state["admit_url"], "ready": state.get("ready", False),
            "supervisor": {"pid": supervisor, "running": pid_alive(supervisor)},
            "processes": [{"name": name, "pid": pid, "running": pid_alive(pid),
                           "restarts": restarts.get(name, 0)} for name, pid in pids.items()],
            "metrics": state.get("metrics", {}),
            "functions": (knative_mode.read_state(args.state_dir) or {}).get("functions", [])},
            indent=2))
        return 0
    print(f"{'supervisor':10} pid {supervisor!s:>7} "
          f"{'running' if pid_alive(supervisor) else 'stopped'}")
    for name, pid in pids.items():
        alive = pid_alive(pid)
        print(f"{name:10} pid {pid:7} {'running' if alive else 'stopped':8} "
              f"restarts {restarts.get(name, 0)}")
    for fn in (knative_mode.read_state(args.state_dir) or {}).get("functions", []):
        print(f"fn-{fn['name']:7} pid {fn['pid']!s:>7} {fn['state']:14} "
              f"cold starts {fn['cold_starts']} {fn['url']}")
    print(f"admit URL: {state['admit_url']} (metrics at /metrics)")
    metrics: dict[str, str] = state.get("metrics", {})  # type: ignore[assignment]
    for step, url in metrics.items():
        print(f"{step:10} metrics {url}")
    return 0


def _restart(args: argparse.Namespace) -> int:
    """Stop process `name` (SIGTERM; a broker node shuts down in order) and wait until the
    stack's supervisor has started it again: the supervisor restarts a process that exits."""
    state = control.running_state(args.state_dir)
    if state is None:
        _say(f"no running stack recorded in {args.state_dir}")
        return 1
    pids: dict[str, int] = state["pids"]
    if args.name not in pids:
        _say(f"no process {args.name!r} in the stack: {', '.join(pids)}")
        return 1
    if not pid_alive(state.get("supervisor")):
        _say("the stack's supervisor is not running: nothing would start it again")
        return 1
    old = pids[args.name]
    if pid_alive(old):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(old, signal.SIGCONT)  # a paused process could not act on TERM
            os.killpg(old, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        now: dict[str, Any] = read_state(args.state_dir) or {}
        pid = now.get("pids", {}).get(args.name)
        if pid != old and pid_alive(pid):
            _say(f"restarted {args.name} (pid {pid}, restart "
                 f"{now.get('restarts', {}).get(args.name, 0)})")
            return 0
        time.sleep(0.2)
    _say(f"{args.name} did not run again within {args.timeout:.0f} s; see `dev status`")
    return 1


def _scale(args: argparse.Namespace) -> int:
    """Ask the running stack's `dev up` process for COUNT members of STEP's group and wait
    until exactly that many run (`devstack.members`)."""
    state = control.running_state(args.state_dir)
    if state is None or not pid_alive(state.get("supervisor")):
        _say(f"no running stack (with its supervisor) recorded in {args.state_dir}")
        return 1
    if args.step not in CONSUMER_STEPS or args.count < 1:
        _say(f"STEP is one of {', '.join(CONSUMER_STEPS)}, COUNT 1 or more")
        return 1
    if state.get("broker") != "kafka":
        _say("scaling needs Apache Kafka (dev up --broker kafka): Tansu's topics have one "
             "partition each")
        return 1
    have = _partitions(state, args.step)
    if args.count > have:
        _say(f"{args.step}'s topics have {have} partition{'s' if have > 1 else ''} in this "
             f"stack, so members beyond {have} would idle: start it with --replicas 2 or more "
             "(topics with their declared partitions)")
        return 1
    members.request_scale(args.state_dir, args.step, args.count)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        now: dict[str, Any] = read_state(args.state_dir) or {}
        pids: dict[str, int] = now.get("pids", {})
        running = sorted(n for n, p in pids.items()
                         if n.rsplit("-", 1)[0] == args.step and pid_alive(p))
        if len(running) == args.count and not (args.state_dir / "scale" / args.step).exists():
            _say(f"{args.step}: {', '.join(running)}")
            return 0
        time.sleep(0.2)
    _say(f"{args.step} did not reach {args.count} members within {args.timeout:.0f} s; see "
         "`dev status`")
    return 1


def _partitions(state: dict[str, Any], step: str) -> int:
    """The fewest partitions of the topics `step` reads in the stack (asked of its brokers)."""
    settings = Settings.from_env(state.get("env", {}))
    topics = kafka.admin_client(settings, log_level=0).list_topics(timeout=10).topics
    return min(len(topics[settings.topic(t)].partitions) for t in load_step(step).consumes)
