"""The sandbox's pool of parsing processes: reused while healthy, replaced after a job that ran
out of time or memory (its successor warmed up on a sample, and started in a lull), never more
jobs at once than its size, and gone after `close()`."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import time

import pytest

from bridge.errors import DocumentError
from bridge.sandbox import Limits, Sandbox


def _window(seconds: float) -> tuple[float, float]:
    started = time.monotonic()
    time.sleep(seconds)
    return started, time.monotonic()


class _SlowToCollect:
    """A reference cycle whose collection takes `seconds`: its finalizer sleeps."""

    def __init__(self, seconds: float) -> None:
        self.me = self
        self.seconds = seconds

    def __del__(self) -> None:
        time.sleep(self.seconds)


def _leave_garbage(seconds: float) -> int:
    gc.collect()  # no automatic collection comes due before this job has answered
    _SlowToCollect(seconds)
    return os.getpid()


def _uncollected() -> int:
    return sum(isinstance(o, _SlowToCollect) for o in gc.get_objects())


_warmed_on: list[str] = []  # in a child: the warm-up jobs it ran


def _warm(sample: str) -> None:
    _warmed_on.append(sample)


def _warm_ups() -> tuple[int, list[str]]:
    return os.getpid(), _warmed_on


def _broken_warm_up() -> None:
    raise ValueError("the sample is broken")


def _live_children() -> list[int]:
    return [p.pid for p in multiprocessing.active_children() if p.is_alive() and p.pid]


async def test_each_new_child_warms_up_on_the_sample_before_its_first_job() -> None:
    sandbox = Sandbox(Limits(memory_bytes=256 * 2**20, seconds=10), size=1,
                      warm_up=(_warm, ("sample mail",)))
    try:
        first, warmed = await sandbox.run(_warm_ups)
        assert warmed == ["sample mail"]
        with pytest.raises(DocumentError, match="needs more than 256 MB of memory"):
            await sandbox.run(bytearray, 2**30)
        successor, warmed = await sandbox.run(_warm_ups)
        assert successor != first and warmed == ["sample mail"]  # once, in each child
    finally:
        await sandbox.close()


async def test_a_failing_warm_up_is_logged_and_the_child_still_serves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox = Sandbox(Limits(memory_bytes=512 * 2**20, seconds=10), size=1,
                      warm_up=(_broken_warm_up, ()))
    try:
        assert await sandbox.run(os.getpid) != os.getpid()
        assert "warm-up job failed: the sample is broken" in caplog.text
    finally:
        await sandbox.close()


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


async def _until(count: int) -> None:
    deadline = time.monotonic() + 10
    while len(_live_children()) != count:
        assert time.monotonic() < deadline, f"{_live_children()}, not {count} children"
        await asyncio.sleep(0.02)


async def test_a_successor_starts_in_a_lull_while_another_child_takes_the_jobs() -> None:
    """Starting a process takes the cores for ~10 ms: not while mail is being answered, unless
    no other child could take the next mail."""
    lull = asyncio.Event()
    sandbox = Sandbox(Limits(memory_bytes=256 * 2**20, seconds=10), size=2, lull=lull.wait)
    try:
        await sandbox.run(os.getpid)
        await _until(2)  # the spare started at once: no child was idle for the next job
        with pytest.raises(DocumentError, match="needs more than 256 MB of memory"):
            await sandbox.run(bytearray, 2**30)
        await asyncio.sleep(0.5)
        await _until(1)  # its successor waits: mail keeps coming, and a child is idle
        lull.set()
        await _until(2)
        lull.clear()
        with pytest.raises(DocumentError, match="needs more than 256 MB of memory"):
            await sandbox.run(bytearray, 2**30)
        await _until(1)
        # two jobs at once: the second finds no idle child and starts its own
        assert len(set(await asyncio.gather(*(sandbox.run(_pid_after, 0.2) for _ in "ab")))) == 2
        lull.set()
        await asyncio.sleep(0.5)
        await _until(2)  # and the waiting successor is not started as a third
    finally:
        await sandbox.close()


async def test_close_does_not_wait_for_a_lull_that_never_comes() -> None:
    sandbox = Sandbox(Limits(memory_bytes=256 * 2**20, seconds=10), size=2,
                      lull=asyncio.Event().wait)
    await sandbox.run(os.getpid)
    await _until(2)
    with pytest.raises(DocumentError, match="needs more than 256 MB of memory"):
        await sandbox.run(bytearray, 2**30)
    await _until(1)  # its successor waits for the lull
    await asyncio.wait_for(sandbox.close(), 5)
    assert _live_children() == []


async def test_a_childs_garbage_is_collected_after_its_answer_and_before_its_next_job() -> None:
    sandbox = Sandbox(Limits(memory_bytes=512 * 2**20, seconds=10), size=1)
    try:
        await sandbox.run(os.getpid)  # started
        started = time.monotonic()
        await sandbox.run(_leave_garbage, 2.0)
        assert time.monotonic() - started < 1.5  # the answer did not wait for the collection
        assert await sandbox.run(_uncollected) == 0  # the next job did
    finally:
        await sandbox.close()


async def test_background_work_waits_for_its_turn_before_each_job() -> None:
    turn = asyncio.Event()
    sandbox = Sandbox(Limits(memory_bytes=512 * 2**20, seconds=10), size=1, give_way=turn.wait)
    try:
        job = asyncio.create_task(sandbox.run(os.getpid))
        await asyncio.sleep(0.3)
        assert not job.done()
        turn.set()
        assert await asyncio.wait_for(job, 10) != os.getpid()
    finally:
        await sandbox.close()


async def test_a_child_is_reused_from_job_to_job() -> None:
    sandbox = Sandbox(Limits(memory_bytes=512 * 2**20, seconds=10), size=1)
    try:
        first, second = await sandbox.run(os.getpid), await sandbox.run(os.getpid)
        assert first == second != os.getpid()
    finally:
        await sandbox.close()


async def test_children_do_not_preempt_the_event_loop_that_hands_them_jobs() -> None:
    sandbox = Sandbox(Limits(memory_bytes=512 * 2**20, seconds=10, nice=10), size=1)
    try:
        assert await sandbox.run(os.sched_getscheduler, 0) == os.SCHED_BATCH
        assert await sandbox.run(os.nice, 0) == 10  # background work keeps its lower share
    finally:
        await sandbox.close()


async def test_a_job_out_of_time_is_refused_in_words_and_its_child_replaced() -> None:
    sandbox = Sandbox(Limits(memory_bytes=512 * 2**20, seconds=0.5), size=1)
    try:
        before = await sandbox.run(os.getpid)
        with pytest.raises(DocumentError, match=r"reading the mail took longer than 0\.5 seconds"):
            await sandbox.run(time.sleep, 5, what="the mail")
        after = await sandbox.run(os.getpid)
        assert after != before
    finally:
        await sandbox.close()


async def test_a_job_out_of_memory_is_refused_in_words_and_its_child_replaced() -> None:
    sandbox = Sandbox(Limits(memory_bytes=256 * 2**20, seconds=10), size=1)
    try:
        before = await sandbox.run(os.getpid)
        with pytest.raises(DocumentError, match="needs more than 256 MB of memory"):
            await sandbox.run(bytearray, 2**30)
        assert await sandbox.run(os.getpid) != before
    finally:
        await sandbox.close()


async def test_a_childs_successor_is_started_before_the_next_job_needs_it() -> None:
    """Starting a process takes longer than checking a mail: a child that is done is replaced
    after its job's answer, not in front of the next job."""
    sandbox = Sandbox(Limits(memory_bytes=256 * 2**20, seconds=10), size=1)
    try:
        before = await sandbox.run(os.getpid)
        with pytest.raises(DocumentError, match="needs more than 256 MB of memory"):
            await sandbox.run(bytearray, 2**30)
        deadline = time.monotonic() + 10
        while not (successors := [p for p in multiprocessing.active_children()
                                  if p.pid != before and p.is_alive()]):
            assert time.monotonic() < deadline, "no successor was started without a job"
            await asyncio.sleep(0.02)
        assert await sandbox.run(os.getpid) == successors[0].pid
    finally:
        await sandbox.close()


async def test_no_more_jobs_run_at_once_than_the_pool_has_children() -> None:
    sandbox = Sandbox(Limits(memory_bytes=512 * 2**20, seconds=10), size=2)
    try:
        windows = sorted(await asyncio.gather(*(sandbox.run(_window, 0.3) for _ in range(4))))
        # each job may overlap at most one other
        for i, (start, _) in enumerate(windows):
            assert sum(1 for s, e in windows[:i] if e > start) <= 1
    finally:
        await sandbox.close()


async def test_close_stops_every_child_and_a_dead_idle_child_is_replaced() -> None:
    sandbox = Sandbox(Limits(memory_bytes=512 * 2**20, seconds=10), size=1)
    pid = await sandbox.run(os.getpid)
    os.kill(pid, 9)  # the OOM killer, say, while it waits for work
    await asyncio.sleep(0.2)
    replacement = await sandbox.run(os.getpid)
    assert replacement != pid
    await sandbox.close()
    deadline = time.monotonic() + 5
    while alive(replacement):
        assert time.monotonic() < deadline, "close() left a child running"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
