"""Ports the local stack hands its children."""

from __future__ import annotations

import socket

import pytest

from quotaflow.devstack import process
from quotaflow.devstack.process import ephemeral_ports, free_port


def test_free_ports_lie_outside_the_kernels_ephemeral_range_and_are_never_handed_out_twice(
        ) -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if p in ephemeral_ports()]


def test_a_port_someone_listens_on_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    block = free_port()
    while block + 2 >= ephemeral_ports().start:  # three ports, all outside the ephemeral range
        block = free_port()
    monkeypatch.setattr(process, "draw_range", lambda _ephemeral: (block, block + 2))
    listeners = []
    try:
        for port in (block, block + 1):
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            s.listen()
            listeners.append(s)
        assert free_port() == block + 2  # the only port of the three nobody listens on
        with pytest.raises(process.DevStackError, match="no free port"):
            free_port()  # and it was handed out once already
    finally:
        for s in listeners:
            s.close()
