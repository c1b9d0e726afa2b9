"""Which partition carries each camera: spread evenly, and never moved once placed.

Hashing a few camera ids onto partitions piles them up by chance: the 8 benchmark cameras
hashed onto 5 of 12 partitions, 5 : 3 between two inference replicas, so one replica queued
frames while the other idled. Ingest instead places each new camera on the partition with the
fewest cameras, ties broken in an order that alternates between the halves, quarters... of the
partition range, so that the consumers of a range assignment (librdkafka's default) get
a fair share. A placement is kept for good (a file under ``FRAMEWIRE_HOME``): a camera
that kept changing partition could have its frames overtake each other. Every stage after
ingest writes a record to the partition its input came from, so the camera stays on that
partition through the whole pipeline.

Several ingest processes on one host share the file (under a lock); ingest processes on
different hosts place their own cameras each, which is still even per host.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def _van_der_corput(partitions: int) -> list[int]:
    """0, P/2, P/4, 3P/4, ...: every prefix is spread evenly over the range."""
    order: list[int] = []
    seen: set[int] = set()
    i = 0
    while len(order) < partitions:
        x, denominator, n = 0.0, 1.0, i
        while n:
            denominator *= 2
            x += (n % 2) / denominator
            n //= 2
        p = int(x * partitions)
        if p not in seen:
            seen.add(p)
            order.append(p)
        i += 1
    return order


def range_owner(partition: int, partitions: int, consumers: int) -> int:
    """Which of ``consumers`` a range assignment (librdkafka's default) gives ``partition``."""
    per, extra = divmod(partitions, consumers)
    end = 0
    for consumer in range(consumers):
        end += per + (1 if consumer < extra else 0)
        if partition < end:
            return consumer
    raise ValueError(f"partition {partition} is not below {partitions}")


# consumer counts whose shares the order balances (range assignment; round-robin for 2)
BALANCED_FOR = (2, 3, 4, 5, 6, 8)


@functools.cache
def spread_order(partitions: int) -> list[int]:
    """Partitions in the order new cameras fill them.

    Each partition is chosen so that the consumers of a range assignment, for any of 2 to 8
    consumers, hold cameras as evenly as they can (and the two of a round-robin one), with
    the van der Corput order breaking ties. Above 64 partitions, the van der Corput order.
    """
    base = _van_der_corput(partitions)
    if partitions > 64:
        return base
    rank = {p: i for i, p in enumerate(base)}
    owners = [[range_owner(p, partitions, c) for p in range(partitions)]
              for c in BALANCED_FOR if c <= partitions]
    if partitions >= 2:
        owners.append([p % 2 for p in range(partitions)])
    held = [[0] * partitions for _ in owners]
    order: list[int] = []
    left = set(range(partitions))
    while left:
        best = min(left, key=lambda p: (sorted((held[k][owner[p]] for k, owner in
                                                enumerate(owners)), reverse=True), rank[p]))
        order.append(best)
        left.remove(best)
        for k, owner in enumerate(owners):
            held[k][owner[best]] += 1
    return order


def choose_partition(placed: dict[str, int], partitions: int) -> int:
    """The partition for a new camera: fewest cameras first, then the spread order."""
    counts = [0] * partitions
    for p in placed.values():
        if 0 <= p < partitions:
            counts[p] += 1
    rank = {p: i for i, p in enumerate(spread_order(partitions))}
    return min(range(partitions), key=lambda p: (counts[p], rank[p]))


class CameraPlacement:
    """The camera → partition table of one host, kept in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._partitions: int | None = None
        self._placed: dict[str, int] = {}

    def partition_for(self, camera_id: str, partitions: int) -> int:
        """The camera's partition among ``partitions``, placing it first if it is new."""
        with self._lock:
            if self._partitions == partitions and camera_id in self._placed:
                return self._placed[camera_id]
            return self._place(camera_id, partitions)

    def _place(self, camera_id: str, partitions: int) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # other ingest processes on this host
            table = self._read()
            found = table.get("cameras")
            placed = {str(k): v for k, v in found.items() if isinstance(v, int)} \
                if isinstance(found, dict) else {}
            if table.get("partitions") != partitions:
                if placed:
                    log.warning("the topics' partition count changed; cameras are placed "
                                "again (their frames may be reordered once)",
                                extra={"was": table.get("partitions"), "now": partitions})
                placed = {}
            if camera_id not in placed:
                placed[camera_id] = choose_partition(placed, partitions)
                self._write({"partitions": partitions, "cameras": placed})
                log.info("camera placed", extra={"camera_id": camera_id,
                                                 "partition": placed[camera_id]})
        self._partitions, self._placed = partitions, placed
        return placed[camera_id]

    def _read(self) -> dict[str, object]:
        try:
            table = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("camera placement file unreadable; placing cameras again",
                        extra={"path": str(self.path), "error": str(exc)})
            return {}
        return table if isinstance(table, dict) else {}

    def _write(self, table: dict[str, object]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".placement-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(table, out, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise
