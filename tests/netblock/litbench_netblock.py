"""Fail any socket connect to a non-loopback address: proves the tests download nothing.

``install()`` patches ``socket.socket.connect``/``connect_ex`` in this process. ``conftest.py``
installs it for the pytest process and puts ``tests/netblock`` on ``PYTHONPATH`` with
``LITBENCH_BLOCK_NETWORK=1``, so the ``sitecustomize`` here installs it in every subprocess too
(suite runs, DDP ranks, torchrun nodes). Unix sockets and 127.0.0.0/8, ::1 stay allowed (DDP rendezvous).
"""

from __future__ import annotations

import ipaddress
import socket

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


class NetworkBlockedError(OSError):
    pass


def _is_allowed(sock: socket.socket, address) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: resolving it would already be a network lookup
        return False


def _guarded(original):
    def connect(self: socket.socket, address):
        if not _is_allowed(self, address):
            raise NetworkBlockedError(f"network access blocked in tests: connect to {address!r}")
        return original(self, address)

    return connect


def install() -> None:
    socket.socket.connect = _guarded(_original_connect)
    socket.socket.connect_ex = _guarded(_original_connect_ex)
