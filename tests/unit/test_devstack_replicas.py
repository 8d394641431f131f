"""`dev up --replicas N`: a consumer step's processes, and the broker it needs."""

from __future__ import annotations

from pathlib import Path

from quotaflow.devstack.stack import DevStack
from quotaflow.settings import Settings


def test_a_step_runs_under_its_own_name_or_as_numbered_members(tmp_path: Path) -> None:
    assert DevStack(tmp_path, Settings()).step_names("reserve") == ["reserve"]
    assert DevStack(tmp_path, Settings(), replicas=3).step_names("reserve") == [
        "reserve-1", "reserve-2", "reserve-3"]
