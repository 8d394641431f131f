"""`dev up --replicas N`: a consumer step's processes, and the broker it needs."""

from __future__ import annotations

import pytest

from quotaflow.devstack import replicas
from quotaflow.devstack.process import DevStackError


def test_a_step_runs_under_its_own_name_or_as_numbered_members() -> None:
    assert replicas.step_names("reserve", 1) == ["reserve"]
    assert replicas.step_names("reserve", 3) == ["reserve-1", "reserve-2", "reserve-3"]
    assert replicas.members(["estimate", "reserve"], 2) == [
        ("estimate", "estimate-1"), ("estimate", "estimate-2"),
        ("reserve", "reserve-1"), ("reserve", "reserve-2")]


def test_members_get_the_declared_partitions_on_apache_kafka_only() -> None:
    assert replicas.partitions(None, 1, 1) == 1
    with pytest.raises(DevStackError, match="needs Apache Kafka"):
        replicas.partitions(None, 2, 1)
