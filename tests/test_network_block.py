"""The test session cannot reach the network, in-process or in subprocesses; loopback still works."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

PROBE = "import socket\ntry:\n    socket.create_connection(('93.184.216.34', 80), timeout=2)\nexcept OSError as e:\n    print(type(e).__name__)"


def test_outbound_connect_is_blocked_in_process() -> None:
    with pytest.raises(OSError, match="network access blocked"):
        socket.create_connection(("93.184.216.34", 80), timeout=2)


def test_outbound_connect_is_blocked_in_a_subprocess() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "NetworkBlockedError", done.stderr


def test_loopback_stays_open_for_ddp_rendezvous() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2) as client:
            accepted, _ = server.accept()
            with accepted:
                client.sendall(b"rendezvous")
                assert accepted.recv(16) == b"rendezvous"
