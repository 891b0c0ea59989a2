"""Hosts of their own on one machine: a network namespace per host, joined to the root
namespace by a veth pair, so a test can cut one host off the network and heal it again.

Each host gets a /30 of 198.18.0.0/15 (the range RFC 2544 sets aside for network tests, so it
collides with no real network): the root end of its veth pair is the host's gateway (where a
forwarder in the root namespace serves the database, which listens on loopback only), the
other end is the host's own address. `cut()` takes the root end down: the host's packets go
nowhere and its open connections hang, as they do when a real link fails, without any side
closing anything; `heal()` brings it back, and the kernel restores the address's routes.

Names carry the test process's pid, so concurrent sessions never share a namespace, and a
namespace left behind by a session that was killed before it could clean up (its pid is gone)
is removed by the next one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence

IP_TIMEOUT_S = 10.0  # seconds one `ip` command may take
NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
MAX_HOSTS = 4  # /30s per pid: keeps the pid-derived subnets of two sessions apart
SUBNETS_PER_PID = MAX_HOSTS
PID_SLOTS = NETWORK.num_addresses // 4 // SUBNETS_PER_PID  # 8192
NAMESPACE_PREFIX = "pgq"
LINK_PREFIX = "pq"
OURS = re.compile(rf"^(?:{NAMESPACE_PREFIX}(\d+)h|{LINK_PREFIX}(\d+)o)\d+$")


class NetnsUnavailable(Exception):
    """Network namespaces cannot be made here; the message says exactly why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    """One simulated machine.

    Args:
        index: its number, from 0.
        namespace: its network namespace.
        outside: the root namespace's end of its veth pair (what `cut` takes down).
        inside: its own end, inside `namespace`.
        gateway: the address of `outside`: the host reaches the root namespace there.
        address: the address of `inside`.
    """

    index: int
    namespace: str
    outside: str
    inside: str
    gateway: str
    address: str

    @property
    def name(self) -> str:
        """A short name for messages and logs: `host-<index>`."""
        return f"host-{self.index}"

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside the host's namespace (`ip netns exec` execs it, same pid)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def cut(self) -> None:
        """Take the host's link down: nothing reaches it or leaves it until `heal`."""
        _ip("link", "set", "dev", self.outside, "down")

    def heal(self) -> None:
        """Bring the host's link back up."""
        _ip("link", "set", "dev", self.outside, "up")


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here without trying (not root, no `ip`), or None."""
    if os.geteuid() != 0:
        return f"network namespaces need root; running as uid {os.geteuid()}"
    if shutil.which("ip") is None:
        return "network namespaces need `ip` (iproute2), which is not on PATH"
    return None


@contextlib.contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    """`count` hosts (at most MAX_HOSTS), removed on exit however the block ends.

    Raises:
        NetnsUnavailable: not root, no `ip`, or the kernel refused a namespace or a veth pair
            (the message has `ip`'s own error).
    """
    if not 1 <= count <= MAX_HOSTS:
        raise ValueError(f"count must be within 1-{MAX_HOSTS}, got {count}")
    reason = unavailable_reason()
    if reason is not None:
        raise NetnsUnavailable(reason)
    remove_stale()
    pid = os.getpid()
    made: list[Host] = []
    try:
        for index in range(count):
            host = _plan(pid, index)
            made.append(host)
            _create(host)
        yield made
    finally:
        for host in made:
            _remove(host)


def _plan(pid: int, index: int) -> Host:
    subnet = (pid % PID_SLOTS) * SUBNETS_PER_PID + index
    base = NETWORK.network_address + subnet * 4
    return Host(
        index=index,
        namespace=f"{NAMESPACE_PREFIX}{pid}h{index}",
        outside=f"{LINK_PREFIX}{pid}o{index}",
        inside=f"{LINK_PREFIX}{pid}i{index}",
        gateway=str(base + 1),
        address=str(base + 2),
    )


def _create(host: Host) -> None:
    try:
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.outside, "type", "veth", "peer", "name", host.inside)
        _ip("link", "set", host.inside, "netns", host.namespace)
        _ip("addr", "add", f"{host.gateway}/30", "dev", host.outside)
        _ip("link", "set", "dev", host.outside, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/30", "dev", host.inside)
        _ip("-n", host.namespace, "link", "set", "dev", host.inside, "up")
        _ip("-n", host.namespace, "link", "set", "dev", "lo", "up")
    except subprocess.CalledProcessError as exc:
        command = " ".join(exc.cmd)
        raise NetnsUnavailable(f"`{command}` failed: {exc.stderr.strip()}") from exc


def _remove(host: Host) -> None:
    # Deleting the namespace deletes the veth end inside it, and with it the pair; the root
    # end is deleted by name too, for a host whose end never made it into its namespace.
    _ip("netns", "delete", host.namespace, check=False)
    _ip("link", "delete", host.outside, check=False)


def remove_stale() -> None:
    """Remove our namespaces and links whose session's pid no longer exists."""
    listed = _ip("netns", "list", check=False).stdout.split()
    links = [
        line.split(":")[1].strip().split("@")[0]
        for line in _ip("-o", "link", "show", check=False).stdout.splitlines()
        if line.count(":") >= 2
    ]
    for name in (*listed, *links):
        match = OURS.match(name)
        if match is None or _alive(int(match.group(1) or match.group(2))):
            continue
        if name in listed:
            _ip("netns", "delete", name, check=False)
        else:
            _ip("link", "delete", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv: Sequence[str] = ["ip", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=check, stdin=None
    )
