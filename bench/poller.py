"""秒速FAX Plus polling: a full 50-fax receive log drained at exactly one PDF call per
`pdf_interval` (plus the poller's margin), never faster.

The provider refuses a PDF call that comes less than `pdf_interval` after the previous answer
(`ERR_ACCESS_INTERVAL`), so the poller must space its calls; spacing them much wider than needed
delays every received fax. This runs the real `Poller`, `ByosokuClient` and `Store` against the
`ByosokuSimulator` over loopback HTTP, all on one `FakeClock` (the harness of
`tests/rigs.py`: `PollerRig` and `run_workers`, which advance the clock exactly to
the next time a worker says work is due). The simulator's log holds `--faxes` faxes when the
first poll happens, and `initial_sync = "deliver"`, so every one of them is fetched.

Printed: the number of PDF calls, the intervals between consecutive PDF calls (min, max, how
many equal `pdf_interval + margin(pdf_interval)`), the simulator's interval-violation counts,
the fake time from the first log call to the last PDF against the theoretical minimum, and the
wall time the run took.

    .venv/bin/python bench/poller.py
    .venv/bin/python bench/poller.py --faxes 50 --pdf-interval 1 --poll-interval 60
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import command, loadavg, machine, product
from bridge.clock import FakeClock
from bridge.simulators import ByosokuSimulator
from bridge.store import InboundState
from bridge.workers.poller import margin
from tests.rigs import PollerRig, run_workers

EXACT = 1e-6
"""Seconds: fake-clock times are sums of floats near 1.8e9, whose spacing is about 2.4e-7 s, so
"exactly" means equal to within a microsecond (the bit-exact count is printed as well)."""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faxes", type=int, default=50,
                        help="faxes in the receive log at the first poll (the log shows 50)")
    parser.add_argument("--pdf-interval", type=float, default=1.0)
    parser.add_argument("--poll-interval", type=float, default=60.0)
    args = parser.parse_args()
    print(f"machine: {machine()}; load average {loadavg()}")
    print(product())
    print("command:", command())

    clock = FakeClock()
    sim = ByosokuSimulator(clock=clock, log_interval=args.poll_interval,
                           pdf_interval=args.pdf_interval)
    await sim.start()
    ids = [sim.add_fax(fax_number="0368680000", sender=f"03{n:08d}", pages=1 + n % 3)
           for n in range(args.faxes)]
    spacing = args.pdf_interval + margin(args.pdf_interval)
    with tempfile.TemporaryDirectory() as tmp:
        rig = PollerRig(Path(tmp), sim, clock, initial_sync="deliver",
                        poll_interval=args.poll_interval, pdf_interval=args.pdf_interval)
        poller = await rig.open()
        try:
            started_fake = clock.now()
            started_wall = time.perf_counter()
            # Advance in steps of one PDF spacing until every fax is stored; run_workers moves
            # the clock only to the times the poller itself names as due.
            budget = args.poll_interval + 2 * args.faxes * spacing + 10
            while (len(sim.fetched) < len(ids) or len(await rig.store.inbound.all())
                   < len(ids)) and clock.now() - started_fake < budget:
                await run_workers(clock, spacing, poller)
            wall = time.perf_counter() - started_wall
            faxes = await rig.store.inbound.all()
        finally:
            await rig.close()
            await sim.stop()

    pdf_times = [t for t, _, _ in sim.pdf_calls]
    gaps = [b - a for a, b in itertools.pairwise(pdf_times)]
    states = Counter(str(f.state) for f in faxes)
    print(f"\nreceive log: {len(sim.log_rows())} rows (the API shows the latest "
          f"{ByosokuSimulator.LOG_LIMIT}); initial_sync = \"deliver\"; poll_interval "
          f"{args.poll_interval:g} s, pdf_interval {args.pdf_interval:g} s, margin "
          f"{margin(args.pdf_interval):g} s -> spacing {spacing:g} s")
    print(f"log calls: {len(sim.log_calls)} at fake t = "
          f"{', '.join(f'{t - started_fake:.3f}' for t in sim.log_calls)} s")
    print(f"PDF calls: {len(sim.pdf_calls)}; distinct pdfIds fetched {len(sim.fetched)}, "
          f"fetched more than once {sum(1 for n in sim.fetched.values() if n > 1)}; "
          f"stored faxes {len(faxes)} {dict(states)}")
    if gaps:
        exact_bits = sum(1 for g in gaps if g == spacing)
        exact = sum(1 for g in gaps if abs(g - spacing) <= EXACT)
        below = sum(1 for g in gaps if g < args.pdf_interval)
        print(f"intervals between consecutive PDF calls ({len(gaps)}): min {min(gaps):.9f} s, "
              f"max {max(gaps):.9f} s; equal to pdf_interval + margin = {spacing:g} s: "
              f"{exact} within {EXACT:g} s ({exact_bits} bit-exact); shorter than "
              f"pdf_interval: {below}")
    print(f"simulator violations: {sim.violations} (log {sim.log_violations}, "
          f"PDF {sim.pdf_violations})")
    if pdf_times:
        first_pdf = pdf_times[0] - started_fake
        drained = pdf_times[-1] - started_fake
        n = len(ids)
        print(f"fake time: first PDF call at +{first_pdf:.3f} s, last at +{drained:.3f} s after "
              f"the first log call")
        print(f"  theoretical minimum: {n - 1} gaps x pdf_interval = "
              f"{(n - 1) * args.pdf_interval:.3f} s to the last call ({n} x pdf_interval = "
              f"{n * args.pdf_interval:.3f} s counting one interval per fax); with the margin "
              f"{(n - 1) * spacing:.3f} s; measured / minimum = "
              f"{drained / ((n - 1) * args.pdf_interval):.4f}")
    print(f"wall time: {wall:.2f} s")
    complete = (len(sim.fetched) == len(ids) and all(n == 1 for n in sim.fetched.values())
                and states == Counter({str(InboundState.RECEIVED): len(ids)}))
    print("result:", "every fax fetched once and stored" if complete else "INCOMPLETE")


if __name__ == "__main__":
    asyncio.run(main())
