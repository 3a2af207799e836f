"""No test reaches the network, whether the machine is online or not.

`install()` (called by tests/conftest.py before any test module is imported) does two things:

- In this process, name lookups of anything but the local host fail at once (`socket.gaierror`,
  as on a machine without a network) and connections to any address but loopback are refused
  (`ConnectionRefusedError`). Each blocked attempt is appended to `BLOCKED` as (host, port);
  a request sent to the dead proxy below counts as one, as ("127.0.0.1", 9).
- For every process the tests start, the environment sends HTTP(S) through a proxy nobody
  listens on (`http://127.0.0.1:9`, the discard port: refused at once), except for loopback
  (`NO_PROXY`), and puts `tests/netguard_site/` first on `PYTHONPATH`, whose `sitecustomize.py`
  installs the same socket guard in every Python child that keeps that path (renders, Prefect's
  temporary server, bench runs). That `sitecustomize` hides any other one on the path for those
  children (none in the project's virtualenv).

Downloads are tested against a local HTTP server on 127.0.0.1 (tests/engines/test_weights.py).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from pathlib import Path

DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, refused at once
DEAD_PROXY_ADDRESS = ("127.0.0.1", 9)
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
SITE_DIR = Path(__file__).resolve().parent / "netguard_site"
ENV_FLAG = "PROMPTREEL_NETGUARD"  # "1": sitecustomize installs the guard in a child process
BLOCKED: list[tuple[str, object]] = []  # (host, port) of every blocked attempt in this process
WHY = "blocked by tests/netguard.py: tests never reach the network"

_real: dict[str, object] = {}


def is_local(host: object) -> bool:
    """True for loopback and unspecified addresses and the local host's names."""
    if host is None:
        return True  # getaddrinfo(None, port): the local (passive) address
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    text = str(host).strip().strip("[]").lower()
    if text in LOCAL_NAMES or text == "":
        return True
    try:
        ip = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _getaddrinfo(host, port, *args, **kwargs):
    if not is_local(host):
        BLOCKED.append((str(host), port))
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: {WHY}")
    return _real["getaddrinfo"](host, port, *args, **kwargs)


def _gethostbyname(host):
    if not is_local(host):
        BLOCKED.append((str(host), None))
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: {WHY}")
    return _real["gethostbyname"](host)


def _gethostbyname_ex(host):
    if not is_local(host):
        BLOCKED.append((str(host), None))
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: {WHY}")
    return _real["gethostbyname_ex"](host)


def _remote(sock: socket.socket, address: object) -> bool:
    """An address off this machine, or the dead proxy (a request meant for another host)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return False
    return not is_local(address[0]) or (address[0], address[1]) == DEAD_PROXY_ADDRESS


def _connect(self, address):
    if _remote(self, address):
        BLOCKED.append((str(address[0]), address[1]))
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"{address[0]}:{address[1]}: {WHY}")
    return _real["connect"](self, address)


def _connect_ex(self, address):
    if _remote(self, address):
        BLOCKED.append((str(address[0]), address[1]))
        return errno.ECONNREFUSED
    return _real["connect_ex"](self, address)


def installed() -> bool:
    return socket.getaddrinfo is _getaddrinfo


def install() -> None:
    """Guard the sockets of this process (idempotent)."""
    if installed():
        return
    _real.update(getaddrinfo=socket.getaddrinfo, gethostbyname=socket.gethostbyname,
                 gethostbyname_ex=socket.gethostbyname_ex, connect=socket.socket.connect,
                 connect_ex=socket.socket.connect_ex)
    socket.getaddrinfo = _getaddrinfo
    socket.gethostbyname = _gethostbyname
    socket.gethostbyname_ex = _gethostbyname_ex
    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex


def child_env() -> dict[str, str]:
    """Environment variables that keep the processes the tests start off the network."""
    local = "127.0.0.1,localhost,::1"
    env = {ENV_FLAG: "1"}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = DEAD_PROXY
    env["NO_PROXY"] = env["no_proxy"] = local
    path = os.environ.get("PYTHONPATH", "")
    if str(SITE_DIR) not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE_DIR), path) if p)
    return env


def install_everywhere() -> None:
    """This process's sockets, and the environment every child inherits."""
    install()
    os.environ.update(child_env())
