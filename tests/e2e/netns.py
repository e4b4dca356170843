"""Test hosts on a real network: one Linux network namespace per host, joined by veth pairs to a
bridge in the test's own namespace (which holds Redis, the sandbox and the routers), so traffic
between them crosses a link that iptables can cut and tc netem can slow down.

    Network()                a bridge with the gateway address .1 of a random 10.x.y.0/24
    network.host("node-1")   a namespace with eth0 at .11, .12, ..., default route via .1
    host.argv(cmd)           `ip netns exec NS cmd...`: a process on that host
    host.cut(port=..., ...)  iptables DROP in the host's namespace (a partition); heal() undoes
    host.impair(...)         delay and loss on the host's link (netem, else loss by iptables)
    FORWARDER                a TCP forwarder to run on a host (python -c FORWARDER PORT HOST PORT)

Everything is named with a per-run tag and removed by close(). `unavailable()` says why the
machine cannot do this (not root, no iproute2 or iptables, namespaces refused), for a skip.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field

# A TCP forwarder from 127.0.0.1:PORT on a host to HOST:PORT across the network. WhatsApp Web
# is https; the sandbox is plain http, and a page's WebCrypto works only in a secure context,
# which http://127.0.0.1 is and http://10.x is not: so nodes reach the sandbox through this.
FORWARDER = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def client(reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_connection(sys.argv[2], int(sys.argv[3]))
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

async def main():
    server = await asyncio.start_server(client, "127.0.0.1", int(sys.argv[1]))
    print("forwarding", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

IP = shutil.which("ip")
IPTABLES = shutil.which("iptables")
TC = shutil.which("tc")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why namespaces with veth and iptables cannot be made here; None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if IP is None:
        return "iproute2's `ip` is not installed"
    if IPTABLES is None:
        return "iptables is not installed (deploy/install-tools.sh installs it)"
    name = f"smprobe{os.getpid() % 100000}"
    made = _run(IP, "netns", "add", name, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        rule = _run(
            IP, "netns", "exec", name, IPTABLES, "-A", "OUTPUT", "-p", "tcp", "--dport", "9",
            "-j", "DROP", check=False,
        )  # fmt: skip
        if rule.returncode != 0:
            return f"iptables does not work in a namespace: {rule.stderr.strip()}"
        pair = _run(IP, "link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b")
        if pair.returncode != 0:
            return f"veth pairs cannot be made: {pair.stderr.strip()}"
        _run(IP, "link", "del", f"{name}a", check=False)
    finally:
        _run(IP, "netns", "del", name, check=False)
    return None


@dataclass
class Host:
    """One namespace on the network."""

    name: str
    ns: str
    address: str
    veth: str  # the bridge side of its link, in the test's namespace
    impairments: list[str] = field(default_factory=list)

    def argv(self, command: list[str]) -> list[str]:
        assert IP is not None
        return [IP, "netns", "exec", self.ns, *command]

    def _iptables(self, *rule: str) -> None:
        assert IPTABLES is not None
        _run(*self.argv([IPTABLES, *rule]))

    def cut(self, *, port: int, local: bool) -> None:
        """Drop every packet of TCP connections to `port`: this host's own server port
        (`local`), or a port it connects to elsewhere. Nothing is reset: the peer finds out only
        by its deadlines and keepalives, as in a real partition."""
        out, inn = ("--sport", "--dport") if local else ("--dport", "--sport")
        self._iptables("-A", "OUTPUT", "-p", "tcp", out, str(port), "-j", "DROP")
        self._iptables("-A", "INPUT", "-p", "tcp", inn, str(port), "-j", "DROP")

    def heal(self) -> None:
        """Remove every partition; loss set by `impair` comes back."""
        self._iptables("-F", "INPUT")
        self._iptables("-F", "OUTPUT")
        for what in self.impairments:
            if what.endswith("(iptables statistic)"):
                loss = float(what.split()[1].rstrip("%")) / 100
                for chain in ("INPUT", "OUTPUT"):
                    self._iptables(
                        "-I", chain, "-m", "statistic", "--mode", "random", "--probability",
                        f"{loss:g}", "-j", "DROP",
                    )  # fmt: skip

    def impair(self, *, delay_ms: int = 0, loss: float = 0.0) -> list[str]:
        """Delay and loss on this host's link, both ways. netem where the kernel has it; else
        loss by iptables' statistic match and no delay; the returned list says which."""
        if not (delay_ms or loss):
            return []
        netem = ["netem"]
        netem += ["delay", f"{delay_ms}ms"] if delay_ms else []
        netem += ["loss", f"{loss * 100:g}%"] if loss else []
        if TC is not None:
            outward = _run(TC, "qdisc", "replace", "dev", self.veth, "root", *netem, check=False)
            inward = _run(
                *self.argv([TC, "qdisc", "replace", "dev", "eth0", "root", *netem]), check=False
            )
            if outward.returncode == 0 and inward.returncode == 0:
                self.impairments = [" ".join(netem[1:]) + " (netem)"]
                return self.impairments
        applied = []
        if loss:
            for chain in ("INPUT", "OUTPUT"):
                self._iptables(
                    "-I", chain, "-m", "statistic", "--mode", "random", "--probability",
                    f"{loss:g}", "-j", "DROP",
                )  # fmt: skip
            applied.append(f"loss {loss * 100:g}% (iptables statistic)")
        if delay_ms:
            applied.append("no delay: this kernel has no netem (CONFIG_NET_SCH_NETEM)")
        self.impairments = applied
        return applied


class Network:
    """A bridge and the hosts on it; `close()` removes all of it."""

    def __init__(self) -> None:
        assert IP is not None
        self.tag = f"{os.getpid() % 10000:04d}{random.randrange(16**2):02x}"
        octets = (random.randrange(200, 250), random.randrange(0, 256))
        self.prefix = f"10.{octets[0]}.{octets[1]}."
        self.gateway = f"{self.prefix}1"
        self.bridge = f"smb{self.tag}"
        self.hosts: dict[str, Host] = {}
        _run(IP, "link", "add", self.bridge, "type", "bridge")
        _run(IP, "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run(IP, "link", "set", self.bridge, "up")

    def host(self, name: str) -> Host:
        assert IP is not None
        n = len(self.hosts) + 1
        ns = f"sm{self.tag}-{name}"
        veth, peer = f"smv{self.tag}{n}", f"smp{self.tag}{n}"
        address = f"{self.prefix}{10 + n}"
        _run(IP, "netns", "add", ns)
        host = Host(name, ns, address, veth)
        self.hosts[name] = host
        _run(IP, "link", "add", veth, "type", "veth", "peer", "name", peer)
        _run(IP, "link", "set", peer, "netns", ns)
        _run(IP, "link", "set", veth, "master", self.bridge)
        _run(IP, "link", "set", veth, "up")
        _run(*host.argv([IP, "link", "set", peer, "name", "eth0"]))
        _run(*host.argv([IP, "addr", "add", f"{address}/24", "dev", "eth0"]))
        _run(*host.argv([IP, "link", "set", "eth0", "up"]))
        _run(*host.argv([IP, "link", "set", "lo", "up"]))
        _run(*host.argv([IP, "route", "add", "default", "via", self.gateway]))
        return host

    def close(self) -> None:
        assert IP is not None
        for host in self.hosts.values():
            _run(IP, "netns", "del", host.ns, check=False)  # its veth pair goes with it
        _run(IP, "link", "del", self.bridge, check=False)
