"""Memory stays bounded: no per-frame growth in any service over a run (RSS sampled)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_pipeline import STAGES, publish, stored_count

pytestmark = pytest.mark.integration


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def soak(site: Site, rounds: int, per_round: int) -> dict[str, list[float]]:
    """Publish ``rounds`` × ``per_round`` frames; RSS of each stage after each round."""
    frames = [jpeg(synthetic_frame(i, i % 6)) for i in range(per_round)]
    samples: dict[str, list[float]] = {name: [] for name in STAGES}
    for r in range(rounds):
        publish(site, [(f"cam-{i % 6}", data) for i, data in enumerate(frames)])
        wait_until(lambda n=(r + 1) * per_round: stored_count(site) >= n, 300,
                   f"round {r + 1} stored")
        for name in STAGES:
            samples[name].append(rss_mb(site.procs[name][0].pid))
    return samples


def assert_no_growth(samples: dict[str, list[float]], frames_after_warmup: int) -> None:
    for name, mbs in samples.items():
        growth = mbs[-1] - mbs[0]  # the first round is warm-up (model load, arenas, caches)
        print(f"{name}: RSS {' → '.join(f'{m:.0f}' for m in mbs)} MB")
        # a leak of even 20 KB per frame would show; allocator noise stays well under this
        assert growth < 16 + 0.02 * frames_after_warmup, (name, mbs)


def test_services_do_not_grow_per_frame(site: Site):
    site.start(*STAGES)
    samples = soak(site, rounds=3, per_round=120)
    assert_no_growth(samples, 240)


@pytest.mark.slow
def test_services_do_not_grow_per_frame_over_a_long_run(site: Site):
    site.start(*STAGES)
    samples = soak(site, rounds=10, per_round=400)
    assert_no_growth(samples, 3600)
