"""The group committer admit stores requests through: concurrent callers share batches, each
gets its own item's result, and a failed batch fails its callers only."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from quotaflow.adapters.group_commit import GroupCommitter


class SlowCommit:
    """Doubles each item; holds the first batch until released, so others queue behind it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int]:
        if not self.batches:
            self.entered.set()
            self.release.wait(5)
        self.batches.append(list(items))
        if -1 in items:
            raise OSError("the database went away")
        return [2 * i for i in items]


def queued(committer: GroupCommitter[int, int], n: int) -> None:
    """Wait (at most 5 s) until `n` items wait for the committer."""
    for _ in range(500):
        if committer._queue.qsize() >= n:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{committer._queue.qsize()} items queued, not {n}")


def test_concurrent_callers_share_a_batch_and_each_gets_its_own_result() -> None:
    commit = SlowCommit()
    committer = GroupCommitter(commit, max_batch=64)
    with ThreadPoolExecutor(20) as pool:
        first = pool.submit(committer.submit, 0, 5.0)
        assert commit.entered.wait(5)
        rest = [pool.submit(committer.submit, i, 5.0) for i in range(1, 20)]
        queued(committer, 19)  # all behind the held first batch
        commit.release.set()
        assert first.result() == 0
        assert [f.result() for f in rest] == [2 * i for i in range(1, 20)]
    assert commit.batches[0] == [0] and sorted(commit.batches[1]) == list(range(1, 20))
    assert (committer.batches, committer.items) == (2, 20)


def test_a_batch_is_never_larger_than_max_batch() -> None:
    commit = SlowCommit()
    committer = GroupCommitter(commit, max_batch=4)
    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(committer.submit, 0, 5.0)]
        assert commit.entered.wait(5)
        futures += [pool.submit(committer.submit, i, 5.0) for i in range(1, 10)]
        queued(committer, 9)
        commit.release.set()
        assert sorted(f.result() for f in futures) == [2 * i for i in range(10)]
    assert [len(b) for b in commit.batches] == [1, 4, 4, 1]


def test_a_failed_batch_fails_its_callers_and_the_next_batch_commits() -> None:
    commit = SlowCommit()
    commit.release.set()
    committer = GroupCommitter(commit)
    with pytest.raises(OSError, match="went away"):
        committer.submit(-1, 5.0)
    assert committer.submit(3, 5.0) == 6


def test_a_caller_waits_no_longer_than_its_timeout() -> None:
    commit = SlowCommit()  # never released: the first batch hangs
    committer = GroupCommitter(commit)
    with pytest.raises(TimeoutError):
        committer.submit(1, 0.05)
    commit.release.set()
