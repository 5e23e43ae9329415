"""Waiting for what the service does in the background, by re-reading the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.app import Bridge
from bridge.store import JobState


async def wait_until(read: Callable[[], Awaitable[Any]], wanted: Any,
                     timeout: float = 10.0) -> None:
    """Re-read a value from the store until it equals `wanted`: the workers act in the
    background, and the store is the truth about what they did."""
    deadline = time.monotonic() + timeout
    while (value := await read()) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r}, wanted {wanted!r}")
        await asyncio.sleep(0.02)


async def wait_for_state(bridge: Bridge, job_id: int, *states: JobState,
                         timeout: float = 10.0) -> JobState:
    async def state() -> JobState | None:
        job = await bridge.store.jobs.get(job_id)
        return job.state if job is not None and job.state in states else None

    deadline = time.monotonic() + timeout
    while (found := await state()) is None:
        if time.monotonic() > deadline:
            job = await bridge.store.jobs.get(job_id)
            raise AssertionError(f"job {job_id} is {job and job.state}, wanted {states}")
        await asyncio.sleep(0.02)
    return found
