"""The suite is hermetic (tests/netguard.py): no test, and no process a test starts, reaches a
host other than this one, so `make test` behaves the same with the network plugged in or not."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading

import pytest

from tests import netguard
from tests.helpers import ROOT


@pytest.mark.parametrize("host", ["pypi.org", "huggingface.co", "203.0.113.7", "2001:db8::1"])
def test_this_process_cannot_reach_another_host(host: str) -> None:
    before = len(netguard.BLOCKED)
    with pytest.raises(OSError, match="tests never reach the network"):
        socket.create_connection((host, 443), timeout=5)
    assert netguard.BLOCKED[before:] and netguard.BLOCKED[before][0] == host


def test_a_request_goes_to_the_dead_proxy_and_is_counted() -> None:
    import requests

    before = len(netguard.BLOCKED)
    with pytest.raises(requests.exceptions.ProxyError):
        requests.get("https://huggingface.co/w.bin", timeout=5)
    assert netguard.BLOCKED[before:] == [netguard.DEAD_PROXY_ADDRESS]


def test_loopback_still_works() -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(("localhost", srv.server_address[1]), timeout=5):
            pass
    finally:
        srv.shutdown()
        srv.server_close()


CHILD = """
import socket, sys
try:
    socket.create_connection(("example.org", 80), timeout=5)
except OSError as exc:
    print("socket:", exc)
import requests
try:
    requests.get("https://example.org/w.bin", timeout=5)
except requests.RequestException as exc:
    print("requests:", type(exc).__name__)
"""


@pytest.mark.parametrize("pythonpath", ["inherited", "replaced"])
def test_child_processes_cannot_reach_another_host(pythonpath: str) -> None:
    env = dict(os.environ)
    if pythonpath == "replaced":  # as bench/ and some tests do: the proxies still apply
        env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    if pythonpath == "inherited":
        assert "example.org: blocked by tests/netguard.py" in proc.stdout
    assert "requests: ProxyError" in proc.stdout, proc.stdout
