"""`quotaflow dev env`: the running stack's client settings as shell `export` lines that
`eval` turns back into exactly the stack's values, whatever they hold."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from quotaflow.cli.dev_env import exports
from quotaflow.cli.main import main
from quotaflow.settings import KafkaClientConfig, Settings

AWKWARD = "it's $HOME `date` \"q\" \\ a;b|c && d\nline2 * ?"


def stack_settings() -> Settings:
    return replace(Settings(), kafka_bootstrap="127.0.0.1:19093",
                   postgres_url="postgresql://postgres:p%40ss@127.0.0.1:15432/quotaflow",
                   redis_url="redis://127.0.0.1:16379/0", s3_endpoint_url="http://127.0.0.1:19000",
                   kafka_client=KafkaClientConfig({
                       "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
                       "sasl.username": "quotaflow-admin", "sasl.password": AWKWARD,
                       "ssl.ca.location": "/etc/kafka certs/ca.crt"}))


def test_exports_are_export_lines_of_the_client_settings_only() -> None:
    text = exports({**stack_settings().as_env(), "QF_PUBLIC_URL": "http://127.0.0.1:8080",
                    "KAFKA_HOME": "/opt/kafka"})
    names = [line.split("=", 1)[0] for line in text.splitlines() if line.startswith("export ")]
    assert names == ["export KAFKA_BOOTSTRAP_SERVERS", "export POSTGRES_URL",
                     "export REDIS_URL", "export S3_ENDPOINT_URL", "export QF_TOPIC_PREFIX",
                     "export QF_PUBLIC_URL", "export KAFKA_SASL_MECHANISMS",
                     "export KAFKA_SASL_PASSWORD", "export KAFKA_SASL_USERNAME",
                     "export KAFKA_SECURITY_PROTOCOL", "export KAFKA_SSL_CA_LOCATION"]
    assert "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19093\n" in text
    assert "export KAFKA_SSL_CA_LOCATION='/etc/kafka certs/ca.crt'\n" in text


def test_empty_settings_are_left_out() -> None:
    assert "S3_ENDPOINT_URL" not in exports({**Settings().as_env(), "S3_ENDPOINT_URL": ""})


def running_stack(state_dir: Path, settings: Settings) -> None:
    """A state file as the dev stack writes it, whose supervisor (this process) runs."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").write_text(json.dumps({
        "pids": {}, "supervisor": os.getpid(), "ready": True, "restarts": {},
        "env": settings.as_env(), "admit_url": "http://127.0.0.1:18080", "metrics": {}}))


def test_eval_in_bash_gives_back_the_stacks_exact_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running_stack(tmp_path / "dev", stack_settings())
    assert main(["dev", "env", "--state-dir", str(tmp_path / "dev")]) == 0
    printed = capsys.readouterr().out
    script = (f'eval "$(cat {tmp_path}/exports)"\n'
              "python3 -c 'import json, os; print(json.dumps(dict(os.environ)))'\n")
    (tmp_path / "exports").write_text(printed)
    done = subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"]},
                          capture_output=True, text=True, timeout=30, check=True)
    shell_env = json.loads(done.stdout)
    parsed = Settings.from_env(shell_env)
    assert parsed.kafka_client == stack_settings().kafka_client
    assert parsed.kafka_client["sasl.password"] == AWKWARD
    assert (parsed.kafka_bootstrap, parsed.postgres_url, parsed.redis_url,
            parsed.s3_endpoint_url) == (
        "127.0.0.1:19093", stack_settings().postgres_url, "redis://127.0.0.1:16379/0",
        "http://127.0.0.1:19000")
    assert parsed.public_url == "http://127.0.0.1:18080"  # the admit URL


def test_no_running_stack_is_one_line_and_exit_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "env", "--state-dir", str(tmp_path / "none")]) == 1
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1
    assert "no local stack runs" in out.err
