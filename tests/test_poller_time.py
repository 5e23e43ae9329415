"""The 秒速FAX Plus poller's spacing against a wall clock that is stepped (NTP, an operator),
and its pause when a downloaded PDF cannot be stored (issue 19, item 10). The simulator keeps
the provider's own time, which our clock's steps do not reach: it counts every call that came
too soon (`violations`)."""

from __future__ import annotations

import errno
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.clock import FakeClock
from bridge.simulators import ByosokuSimulator
from bridge.store import InboundState
from tests.rigs import PollerRig


class ProviderClock:
    """The provider's clock: time passes as on ours, but our wall clock's steps do not."""

    def __init__(self, ours: FakeClock) -> None:
        self.ours = ours
        self.start = ours.now()

    def now(self) -> float:
        return self.start + self.ours.monotonic()

    def monotonic(self) -> float:
        return self.ours.monotonic()


@pytest.fixture
async def provider(clock: FakeClock) -> AsyncIterator[ByosokuSimulator]:
    sim = ByosokuSimulator(clock=ProviderClock(clock), log_interval=60, pdf_interval=1)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.mark.parametrize("step", [45.0, -3600.0])
async def test_a_wall_clock_step_neither_shortens_nor_stretches_the_log_spacing(
    tmp_path: Path, clock: FakeClock, provider: ByosokuSimulator, step: float,
) -> None:
    rig = PollerRig(tmp_path, provider, clock)
    poller = await rig.open()
    try:
        assert await poller.run_once()  # the first log call
        clock.step(step)
        await rig.run_for(poller, 150)
        assert provider.violations == 0
        gaps = [b - a for a, b in itertools.pairwise(provider.log_calls)]
        assert len(gaps) == 2 and all(61 <= gap < 62 for gap in gaps), gaps
    finally:
        await rig.close()


async def test_across_a_restart_a_wall_clock_stepped_back_waits_one_interval_at_most(
    tmp_path: Path, clock: FakeClock, provider: ByosokuSimulator,
) -> None:
    rig = PollerRig(tmp_path, provider, clock)
    poller = await rig.open()
    await poller.run_once()
    await rig.close()
    clock.step(-3600)  # the stored answer time is now an hour in the future
    poller = await rig.open()
    try:
        assert await poller.next_due() == pytest.approx(clock.now() + 61)
        await rig.run_for(poller, 70)
        assert len(provider.log_calls) == 2 and provider.violations == 0
    finally:
        await rig.close()


async def test_a_full_disk_pauses_pdf_downloads_doubling_and_tells_the_admin_once(
    tmp_path: Path, clock: FakeClock, provider: ByosokuSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fax = provider.add_fax(fax_number="0368680000")

    def no_space(path: Path, data: bytes) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("bridge.workers.poller.write_atomic", no_space)
    rig = PollerRig(tmp_path, provider, clock, initial_sync="deliver")
    poller = await rig.open()
    try:
        await rig.run_for(poller, 1300)
        times = [t for t, _, _ in provider.pdf_calls]
        gaps = [round(b - a) for a, b in itertools.pairwise(times)]
        assert gaps == [10, 20, 40, 80, 160, 320, 600], gaps  # doubling, capped at 600 s
        [alert] = await rig.alerts()
        assert "out of storage" in alert
        monkeypatch.undo()  # space again
        await rig.run_for(poller, 700)
        [stored] = await rig.store.inbound.all()
        assert stored.external_id == fax and stored.state is not InboundState.FETCHING
        assert len(provider.pdf_calls) == 9 and provider.violations == 0  # 8 in vain, then 1
        assert len(await rig.alerts()) == 1  # once, not once per download
    finally:
        await rig.close()
