"""A network namespace joined to this one by a veth pair, and traffic-control faults on it.

Only this machine's own addresses: a private /30 on the veth pair alone (10.200.X.0/30), the
host end in the current namespace, the other end in a namespace named ``fwchaos<pid>``. A
process started with ``ip netns exec`` reaches the host end's address only through the pair,
so a qdisc on both ends degrades exactly the traffic between that process and whatever
listens on the host end. Everything is removed by ``close()``, also after a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence

import pytest


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def _free_subnet() -> int:
    """An X for 10.200.X.0/30 that no interface on this machine uses yet."""
    used = set(re.findall(r"10\.200\.(\d+)\.", _ip("ip", "-4", "-o", "addr").stdout))
    for x in [os.getpid() % 250, *range(250)]:
        if str(x) not in used:
            return x
    raise RuntimeError("every 10.200.X.0/30 for the test veth pair is taken")


class VethLink:
    """``host_address`` (here) <-> ``ns_address`` (in namespace ``namespace``)."""

    def __init__(self) -> None:
        tag = str(os.getpid())[-6:]
        self.namespace = f"fwchaos{tag}"
        self.host_if, self.ns_if = f"fwh{tag}", f"fwn{tag}"
        x = _free_subnet()
        self.host_address, self.ns_address = f"10.200.{x}.1", f"10.200.{x}.2"
        self.created = False

    def open(self) -> VethLink:
        """Create the namespace and the pair; skip the test where namespaces are refused."""
        made = _ip("ip", "netns", "add", self.namespace)
        if made.returncode != 0:
            pytest.skip(f"network namespaces are not permitted here: "
                        f"`ip netns add {self.namespace}` said: {made.stderr.strip()}")
        self.created = True
        steps: list[Sequence[str]] = [
            ("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if),
            ("ip", "link", "set", self.ns_if, "netns", self.namespace),
            ("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_if),
            ("ip", "link", "set", self.host_if, "up"),
            self.in_namespace("ip", "addr", "add", f"{self.ns_address}/30", "dev", self.ns_if),
            self.in_namespace("ip", "link", "set", self.ns_if, "up"),
            self.in_namespace("ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                raise RuntimeError(f"`{' '.join(step)}` failed: {done.stderr.strip()}")
        return self

    def in_namespace(self, *command: str) -> list[str]:
        """``command`` run inside the namespace."""
        return ["ip", "netns", "exec", self.namespace, *command]

    def _qdisc(self, action: str, spec: Sequence[str] = ()
               ) -> list[tuple[list[str], subprocess.CompletedProcess[str]]]:
        commands = [["tc", "qdisc", action, "dev", self.host_if, "root", *spec],
                    self.in_namespace("tc", "qdisc", action, "dev", self.ns_if, "root", *spec)]
        return [(command, _ip(*command)) for command in commands]

    def degrade(self, spec: str) -> None:
        """Put qdisc ``spec`` (e.g. ``netem delay 100ms loss 5%``) on both ends of the pair."""
        for command, done in self._qdisc("add", spec.split()):
            if done.returncode != 0:
                self.heal()
                raise QdiscUnavailable(f"`{' '.join(command)}` said: {done.stderr.strip()}")

    def qdisc_counts(self) -> dict[str, int]:
        """Packets sent and dropped by the qdiscs on both ends, summed (tc -s qdisc show)."""
        totals = {"sent": 0, "dropped": 0}
        for command in (["tc", "-s", "qdisc", "show", "dev", self.host_if],
                        self.in_namespace("tc", "-s", "qdisc", "show", "dev", self.ns_if)):
            for sent, dropped in re.findall(r"Sent \d+ bytes (\d+) pkt \(dropped (\d+)",
                                            _ip(*command).stdout):
                totals["sent"] += int(sent)
                totals["dropped"] += int(dropped)
        return totals

    def heal(self) -> None:
        """Remove any qdisc from both ends (errors ignored: there may be none)."""
        self._qdisc("del")

    def close(self) -> None:
        if self.created:
            _ip("ip", "netns", "del", self.namespace)  # takes its end of the pair with it
            self.created = False
        _ip("ip", "link", "del", self.host_if)  # in case the pair outlived the namespace


class QdiscUnavailable(RuntimeError):
    """The kernel has no such queueing discipline (e.g. no ``sch_netem``)."""
