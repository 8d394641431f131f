"""`quotaflow dev up|down|status|env`, `quotaflow demo` and `quotaflow ask`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from quotaflow import client
from quotaflow.cli import dev_env, dev_status
from quotaflow.devstack import control, members
from quotaflow.devstack.process import DevStackError
from quotaflow.devstack.stack import DevStack
from quotaflow.events.status import RequestStatus
from quotaflow.settings import Settings


def _say(msg: str) -> None:
    print(f"[quotaflow] {msg}", file=sys.stderr, flush=True)


def register(sub: Any) -> None:
    dev = sub.add_parser("dev", help="run the whole pipeline on local processes")
    dsub = dev.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    up = dsub.add_parser("up", help="start broker, S3, functions (and PostgreSQL/Redis if none "
                         "is reachable); prints the admit URL")
    _stack_args(up)
    up.add_argument("--detach", action="store_true",
                    help="start in the background (a supervisor process of its own) and "
                    "return; stop with `quotaflow dev down`")
    up.set_defaults(func=_up)
    down = dsub.add_parser("down", help="stop a stack started with --detach")
    down.add_argument("--state-dir", type=Path, default=Path(".quotaflow/dev"))
    down.set_defaults(func=_down)
    dev_status.register(dsub)
    dev_env.register(dsub)

    demo = sub.add_parser("demo", help="start the stack, create a demo tenant, answer a sample "
                          "prompt, print output and usage, then keep serving until Ctrl-C")
    _stack_args(demo)
    demo.add_argument("--prompt", default="What is the capital of France?")
    demo.add_argument("--max-tokens", type=int, default=32)
    demo.add_argument("--exit", action="store_true", help="stop after the sample request")
    demo.set_defaults(func=_demo)

    ask = sub.add_parser("ask", help="send a prompt to a running stack and wait for the answer")
    ask.add_argument("prompt")
    ask.add_argument("--key", required=True, help="API key (quotaflow tenant create ...)")
    # admit's URL: QF_PUBLIC_URL where set (`eval "$(quotaflow dev env)"` sets it), else :8080
    ask.add_argument("--url", default=os.environ.get("QF_PUBLIC_URL", "http://127.0.0.1:8080"))
    ask.add_argument("--max-tokens", type=int, default=64)
    ask.add_argument("--model", default=None, help="model name (default: QF_MODEL_NAME)")
    ask.set_defaults(func=_ask)


def _stack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8080, help="admit's port (default 8080)")
    p.add_argument("--kafka-port", type=int, default=9092,
                   help="broker port (default 9092; with Apache Kafka, the first node's)")
    p.add_argument("--broker", choices=("kafka", "tansu"), default=None,
                   help="kafka: an Apache Kafka cluster (KRaft; the default where Java 17+ "
                   "and its jars are present); tansu: the embedded broker (the default "
                   "elsewhere; keeps nothing across a restart)")
    p.add_argument("--brokers", type=int, default=3,
                   help="Apache Kafka nodes (default 3: replication 3, min ISR 2; 1: one)")
    p.add_argument("--plaintext", action="store_true", help="Apache Kafka without TLS, SASL "
                   "and ACLs (by default SASL_SSL, each function as its own SCRAM user)")
    p.add_argument("--replicas", type=int, default=1,
                   help="members of each consumer step's group (default 1; more: processes "
                   "reserve-1 ... reserve-N, topics with their declared partitions; needs "
                   "--broker kafka)")
    p.add_argument("--state-dir", type=Path, default=Path(".quotaflow/dev"),
                   help="logs and state (default .quotaflow/dev)")
    p.add_argument("--model", default="built",
                   help="built (default: SmolLM2-135M-Instruct, built once and cached), "
                   "standin (no weights), dir:PATH or registry")
    p.add_argument("--knative", action="store_true",
                   help="run every step as its Knative function under func-python's "
                   "middleware, fed by a local KafkaSource (binary CloudEvents, ordered, "
                   "retries, dead-letter sink); functions idle QF_KNATIVE_IDLE_S are stopped "
                   "and started again by their next delivery")
    p.add_argument("--access-log", action="store_true",
                   help="log a line for every request admit serves (off by default: at "
                   "hundreds of requests a second it costs the door about a tenth of its "
                   "CPU; admit's /metrics counts responses by status)")


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _start(args: argparse.Namespace) -> DevStack:
    # SIGTERM (a supervisor, `timeout`) stops the stack like Ctrl-C does; so does SIGINT when
    # the stack was started in the background by a script, where the shell starts it with
    # SIGINT ignored and Python keeps ignoring it (`kill -INT` would do nothing).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    settings = Settings.from_env()
    source = args.model
    if source == "built":
        from quotaflow.model.build import BuildError, build

        _say(f"building the model (once; cached in {settings.model_cache_dir}) ...")
        try:
            source = f"dir:{build(Path(settings.model_cache_dir), progress=_say).resolve()}"
        except BuildError as exc:
            raise DevStackError(f"{exc} (or run with --model standin)") from None
    settings = replace(settings, model_source=source)
    settings = replace(settings, public_url=f"http://127.0.0.1:{args.port}")
    if args.brokers < 1:
        raise DevStackError("--brokers must be 1 or more")
    if args.replicas < 1:
        raise DevStackError("--replicas must be 1 or more")
    if args.knative and args.replicas > 1:
        raise DevStackError("--knative runs one instance a function: leave out --replicas")
    stack = DevStack(args.state_dir, settings, args.port, args.kafka_port, broker=args.broker or "",
                     admit_access_log=args.access_log, brokers=args.brokers,
                     replicas=args.replicas, knative=args.knative, secure=not args.plaintext)
    stack.up(explicit_pg="POSTGRES_URL" in os.environ,
             explicit_redis="REDIS_URL" in os.environ, progress=_say)
    return stack


def _serve(stack: DevStack) -> int:
    # The stack's supervisor restarts a process that dies; this one only waits to be stopped.
    try:
        _say("serving (a process that dies is restarted); Ctrl-C to stop")
        while True:
            time.sleep(0.5)
            members.apply_requests(stack, _say)  # `quotaflow dev scale`
    except KeyboardInterrupt:
        pass
    return _stop(stack)


def _stop(stack: DevStack) -> int:
    # A second Ctrl-C or SIGTERM while stopping would leave the stack's processes behind.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _say("stopping ...")
    stack.down()
    return 0


def _up(args: argparse.Namespace) -> int:
    running = control.running_state(args.state_dir)
    if running is not None:
        _say(f"a stack is already running from {args.state_dir} (admit URL "
             f"{running.get('admit_url')}); nothing changed. Stop it with `quotaflow dev "
             "down` first.")
        return 1
    if args.detach:
        return _up_detached(args)
    try:
        stack = _start(args)
    except DevStackError as exc:
        _say(f"error: {exc}")
        return 1
    try:
        _say(f"logs in {stack.logs}")
        print(f"admit URL: {stack.admit_url}", flush=True)
        return _serve(stack)
    except KeyboardInterrupt:  # stopped before serving began
        return _stop(stack)


def _up_detached(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "quotaflow", "dev", "up", "--port", str(args.port),
            "--kafka-port", str(args.kafka_port), "--state-dir", str(args.state_dir),
            "--model", args.model, "--brokers", str(args.brokers),
            "--replicas", str(args.replicas)]
    if args.broker:
        argv += ["--broker", args.broker]
    argv += (["--knative"] * args.knative + ["--access-log"] * args.access_log
             + ["--plaintext"] * args.plaintext)
    return control.start_detached(argv, args.state_dir, _say)


def _down(args: argparse.Namespace) -> int:
    stopped = control.stop_recorded(args.state_dir)
    if stopped is None:
        _say(f"no running stack recorded in {args.state_dir}")
    else:
        _say(f"stopped {stopped} processes")
    return 0


def _ask(args: argparse.Namespace) -> int:
    model = args.model or Settings.from_env().model_name
    try:
        accepted = client.submit(args.url, args.key, {"model": model, "prompt": args.prompt,
                                                      "max_tokens": args.max_tokens})
        result = client.wait(args.url, args.key, accepted["request_id"])
    except client.ApiError as exc:
        print(json.dumps(exc.problem, indent=2))
        return 1
    print(json.dumps(result, indent=2))
    return 0 if result["status"] == RequestStatus.COMPLETED else 1


def _demo(args: argparse.Namespace) -> int:
    try:
        stack = _start(args)
    except DevStackError as exc:
        _say(f"error: {exc}")
        return 1
    try:
        return _demo_on(stack, args)
    except KeyboardInterrupt:
        _stop(stack)
        return 130
    except BaseException:
        stack.down()
        raise


def _demo_on(stack: DevStack, args: argparse.Namespace) -> int:
    from quotaflow import compose
    from quotaflow.adapters import postgres as db
    from quotaflow.adapters import tenant_store as tenants
    from quotaflow.ledger.store import PostgresLedger

    s = stack.settings
    with db.connect(s.postgres_url, autocommit=True) as conn:
        name = f"demo-{int(time.time())}"
        key = tenants.create_tenant(conn, name, 10_000)
        compose.projection(s).catch_up(PostgresLedger(conn))
    _say(f"created tenant {name} with 10000 tokens a month")
    print(f"admit URL: {stack.admit_url}")
    print(f"API key:   {key}")
    _say(f"asking: {args.prompt!r}")
    started = time.monotonic()
    accepted = client.submit(stack.admit_url, key, {"model": s.model_name,
                                                    "prompt": args.prompt,
                                                    "max_tokens": args.max_tokens})
    result = client.wait(stack.admit_url, key, accepted["request_id"], timeout_s=300)
    took = time.monotonic() - started
    print(f"\nprompt:  {args.prompt}")
    print(f"answer:  {result['output']}")
    print(f"status:  {result['status']} in {took:.2f} s (model {result['model']['name']} "
          f"{result['model']['version']})")
    print(f"usage:   {json.dumps(result['usage'])}")
    print(f"quota:   {json.dumps(client.quota(stack.admit_url, key))}")
    print(f"\ntry it: curl -s {stack.admit_url}/v1/quota -H 'Authorization: Bearer {key}'")
    if result["status"] != RequestStatus.COMPLETED:
        _say(f"the sample request ended {result['status']}: {result.get('reason')}")
    if args.exit:
        stack.down()
        return 0 if result["status"] == RequestStatus.COMPLETED else 1
    return _serve(stack)
