"""The local stack's Apache Kafka secured as users run theirs (SASL_SSL, SCRAM-SHA-512, ACLs),
tried from outside the stack: each function's process connects as its own user and is refused
another's topic with its own credentials, and the README's recipe for a secured Kafka, run
literally in a fresh shell that holds none of the stack's settings, reads a topic — and ends
within 30 s with one line for a wrong password or a CA that did not sign the brokers'."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

from quotaflow.devstack.stack import DevStack
from tests.e2e.test_pipeline import ask, new_tenant
from tests.services import session_broker

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(session_broker() != "kafka",
                                 reason="Tansu has no TLS, SASL or ACLs")]
ROOT = Path(__file__).resolve().parents[2]
RECIPE_MARK = "<!-- secured-kafka-recipe -->"


def recipe() -> list[str]:
    """The lines of the README's code block that follows RECIPE_MARK."""
    text = (ROOT / "README.md").read_text()
    block = re.search(re.escape(RECIPE_MARK) + r"\n```bash\n(.*?)\n```", text, re.S)
    assert block, f"README.md has no ```bash block after {RECIPE_MARK}"
    return block.group(1).splitlines()


def process_env(pid: int) -> dict[str, str]:
    """The environment process `pid` was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def fresh_shell(tmp_path: Path, stack: DevStack, script: str
                ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `script` with bash in a folder laid out as the repository is where `quotaflow dev
    up` ran (the stack's state in .quotaflow/dev, kafka/examples), with nothing of the stack's
    settings in its environment: what it knows of the stack, it learns from the recipe."""
    work = tmp_path / "shell"
    if not work.exists():
        (work / ".quotaflow").mkdir(parents=True)
        (work / ".quotaflow" / "dev").symlink_to(stack.state_dir.resolve())
        (work / "kafka").symlink_to(ROOT / "kafka")
    keep = ("HOME", "LANG", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONPATH"] = str(ROOT)  # this checkout's quotaflow
    began = time.monotonic()
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=90)
    return done, time.monotonic() - began


def refused(config: dict[str, str], topic: str) -> list[int]:
    """The delivery errors of one record sent to `topic` with `config`."""
    errors: list[int] = []
    producer = Producer({**config, "acks": "all", "message.timeout.ms": 8000, "log_level": 0})
    producer.produce(topic, b"x", on_delivery=lambda err, _m: errors.append(
        err.code() if err else 0))
    producer.flush(15)
    return errors


def test_each_function_runs_as_its_own_user_and_is_refused_another_functions_topic(
        stack: DevStack) -> None:
    env = process_env(stack.procs["estimate"].pid)
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["KAFKA_SASL_USERNAME"] == "quotaflow-estimate"
    assert process_env(stack.procs["infer"].pid)["KAFKA_SASL_USERNAME"] == "quotaflow-infer"
    config = {"bootstrap.servers": stack.settings.kafka_bootstrap,
              **{k[len("KAFKA_"):].lower().replace("_", "."): v for k, v in env.items()
                 if k.startswith(("KAFKA_SECURITY", "KAFKA_SASL", "KAFKA_SSL"))}}
    # estimate's own credentials: its dead-letter topic is its to write, `completed` is not.
    assert refused(config, stack.settings.topic("admitted.dlq")) == [0]
    assert refused(config, stack.settings.topic("completed")) == [
        KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_the_readme_recipe_reads_the_secured_stack_from_a_fresh_shell(
        stack: DevStack, tmp_path: Path) -> None:
    _, key = new_tenant(stack, 500)
    assert ask(stack, key, "on the ledger", max_tokens=2)["status"] == "completed"
    lines = recipe()
    assert lines[0] == 'eval "$(quotaflow dev env)"', lines
    done, _ = fresh_shell(tmp_path, stack, "\n".join(lines[:2]))
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.splitlines()[0])
    assert record["topic"] == stack.settings.topic("ledger") and "error" not in record, record
    assert record["data"], record


@pytest.mark.parametrize("line, cause", [(2, "SASL authentication"), (3, "certificate")])
def test_the_readme_recipe_ends_a_misconfigured_start_within_30_s_with_one_line(
        stack: DevStack, tmp_path: Path, line: int, cause: str) -> None:
    lines = recipe()
    done, took_s = fresh_shell(tmp_path, stack, f"{lines[0]}\n{lines[line]}")
    said = [x for x in (done.stdout + done.stderr).splitlines() if x.strip()]
    assert done.returncode == 1 and len(said) == 1, said
    assert said[0].startswith("quotaflow: Kafka at") and cause in said[0], said
    assert took_s < 30
