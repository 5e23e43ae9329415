"""Shared fixtures: real servers on 127.0.0.1, port 0, awaited until ready (no sleeps).

- `faxmax`: the FaxMAX simulator, recording every request and push.
- `relay`: an aiosmtpd sink that plays the outgoing SMTP relay and records what it got.
- `make_bridge`: starts the real service (SMTP + HTTP + workers) against both.
- `serve`: the `fax-bridge serve` processes a test starts (with `tests.process.start`).
- `clock`, `byosoku`: a fake clock, and the 秒速FAX Plus simulator on it.
- `make_pipeline`: the service's workers, built as the service builds them, for a test to
  drive one by one.
- `listener`: a server on loopback that notes every connection made to it (what a converted
  document links to must never reach it).

The helpers these build on live in modules of their own (tests/relay.py, tests/settings.py,
...), which test modules and bench/ import; nothing imports this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from bridge.app import Bridge
from bridge.clock import Clock, FakeClock
from bridge.config import Settings
from bridge.pipeline import Pipeline, build_pipeline
from bridge.simulators import ByosokuSimulator, FaxMaxSimulator
from bridge.store import Store
from tests.process import ServeProcess
from tests.relay import RelaySink
from tests.rigs import MakePipeline
from tests.settings import PUSH_TOKEN, MakeBridge, settings_for


@pytest.fixture
async def relay() -> AsyncIterator[RelaySink]:
    sink = RelaySink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, loop=loop), "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    yield sink
    server.close()
    await server.wait_closed()


@pytest.fixture
async def faxmax() -> AsyncIterator[FaxMaxSimulator]:
    sim = FaxMaxSimulator(token="sim-token", push_delay=0.01, push_retry_interval=0.05)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def make_bridge(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink
) -> AsyncIterator[MakeBridge]:
    """Start the real service; `via_relay=True` delivers mail to the relay sink instead of
    the Maildir, `clock` (the `clock` fixture) runs it on a fake clock. Every bridge started
    is stopped at the end of the test."""
    started: list[Bridge] = []

    async def make(*, via_relay: bool = True, clock: Clock | None = None,
                   **sections: dict[str, Any]) -> Bridge:
        settings = settings_for(tmp_path, faxmax.url, relay.port if via_relay else None,
                                **sections)
        bridge = Bridge(settings) if clock is None else Bridge(settings, clock=clock)
        await bridge.start()
        started.append(bridge)
        faxmax.push_url = f"http://127.0.0.1:{bridge.http_port}/faxmax/push/{PUSH_TOKEN}"
        return bridge

    yield make
    for bridge in started:
        if bridge.workers and not all(w._stopping for w in bridge.workers):
            await bridge.stop()


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A web server on loopback that notes every connection made to it."""
    seen: list[bytes] = []

    async def note(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(200))
        writer.close()

    server = await asyncio.start_server(note, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], seen
    server.close()
    await server.wait_closed()


# --- the real `fax-bridge serve` process ---------------------------------------------------


@pytest.fixture
async def serve(tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink
                ) -> AsyncIterator[list[ServeProcess]]:
    """Processes the test starts; each is stopped at the end."""
    started: list[ServeProcess] = []
    yield started
    for process in started:
        if process.running():
            await process.kill()


# --- 秒速FAX Plus on a fake clock -----------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def byosoku(clock: FakeClock) -> AsyncIterator[ByosokuSimulator]:
    sim = ByosokuSimulator(clock=clock, log_interval=60, pdf_interval=1)
    await sim.start()
    yield sim
    await sim.stop()


# --- the workers without the service ---------------------------------------------------------


@pytest.fixture
async def make_pipeline() -> AsyncIterator[MakePipeline]:
    built: list[Pipeline] = []

    def make(settings: Settings, store: Store, clock: Clock, **parts: Any) -> Pipeline:
        pipeline = build_pipeline(settings, store, clock, **parts)
        built.append(pipeline)
        return pipeline

    yield make
    for pipeline in built:
        await pipeline.close()
