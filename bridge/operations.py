"""The operator's commands on a data directory's store: status, list, show, unmatched, retry,
cancel, backup and replay-quarantine. Each opens the store for as long as it needs it, so any
of them is safe while the service runs; a command that queued work tells the running service
(SIGUSR1) to do it now. Each returns its exit code, 0 or 1; errors, and a job that does not
exist (exit code 3), are raised, for bridge/cli.py to turn into their message and code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bridge import config, ocr, office
from bridge.clock import SystemClock
from bridge.errors import BridgeError, NotFound
from bridge.instance import running_pid, wake_running
from bridge.store import (
    Attempt,
    InboundState,
    Job,
    JobState,
    MailInfo,
    MailState,
    Message,
    Snapshot,
    Store,
    Unmatched,
)

DEFAULT_WINDOW = config.FaxmaxSettings().match_window  # with --data-dir, no config is read


def _load(args: argparse.Namespace) -> config.Settings:
    """The settings that name the data directory (unless --data-dir does) and the push
    handling replay-quarantine uses."""
    return config.load(config.find_config_file(args.config))


def _database(args: argparse.Namespace) -> Path:
    data_dir = Path(args.data_dir) if args.data_dir else _load(args).data_path
    db = data_dir / "fax-bridge.sqlite3"
    if not db.exists():
        raise BridgeError(f"no fax-bridge database at {db}")
    return db


def _when(t: float | None) -> str:
    """A stored time for people: local time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _attention(snap: Snapshot) -> list[str]:
    """What a person should look at, each with the command that shows it."""
    out = []
    if n := snap.jobs.get(JobState.UNKNOWN, 0):
        out.append(f"{n} fax(es) of unknown outcome, never resent on their own: "
                   "fax-bridge list --state unknown")
    if n := snap.jobs.get(JobState.FAILED, 0):
        out.append(f"{n} fax(es) failed (their senders were told): "
                   "fax-bridge list --state failed")
    if n := snap.emails.get(MailState.FAILED, 0):
        out.append(f"{n} email(s) given up after retries: fax-bridge list --mail failed")
    if n := snap.emails.get(MailState.UNKNOWN, 0):
        out.append(f"{n} email(s) of unknown delivery (the relay never answered), not resent "
                   "on their own: fax-bridge list --mail unknown")
    if n := sum(v for (_, state), v in snap.received.items() if state == InboundState.FAILED):
        out.append(f"{n} received fax(es) could not be fetched or mailed (the admin was told)")
    if snap.unmatched:
        out.append(f"FaxMAX pushed the status of {snap.unmatched} fax(es) that no job knows "
                   "(an unknown job it could not be told apart, or another sender on the "
                   "account): fax-bridge unmatched")
    if snap.quarantined:
        out.append(f"{snap.quarantined} FaxMAX push event(s) not understood, kept: "
                   "fax-bridge replay-quarantine after a fix")
    if snap.log_gaps:
        out.append(f"the 秒速FAX Plus log scrolled past a poll {snap.log_gaps} time(s): faxes "
                   "may have been missed; check the provider's panel")
    return out


def _snapshot(db: Path) -> Snapshot:
    async def run() -> Snapshot:
        store = await Store.open(db)
        try:
            return await store.upkeep.snapshot(time.time())
        finally:
            await store.close()

    return asyncio.run(run())


def _tools(args: argparse.Namespace) -> tuple[str, str]:
    """Whether Office documents convert, and received faxes are OCR'd, as the service would
    find it with these settings (or the defaults, when only --data-dir is given and there is
    no configuration file)."""
    try:
        settings = _load(args)
    except BridgeError:
        settings = config.Settings()
    return (office.availability(settings.documents).describe(),
            ocr.availability(settings).describe())


def cmd_status(args: argparse.Namespace) -> int:
    db = _database(args)
    snap = _snapshot(db)
    pid = running_pid(db.parent)
    attention = _attention(snap)
    conversion, reading = _tools(args)
    if args.json:
        print(json.dumps({
            "data_dir": str(db.parent), "running_pid": pid, "office_conversion": conversion,
            "ocr": reading,
            "jobs": snap.jobs,
            "received": [{"provider": p, "state": s, "count": n}
                         for (p, s), n in sorted(snap.received.items())],
            "emails": snap.emails,
            "queues": {q: {"depth": d, "oldest_age_seconds": round(a, 3)}
                       for q, (d, a) in snap.queues.items()},
            "quarantined": snap.quarantined, "log_gaps": snap.log_gaps,
            "last_poll": snap.last_poll or None, "last_push": snap.last_push or None,
            "attention": attention}, indent=2, ensure_ascii=False))
        return 0
    now = time.time()
    received: dict[str, int] = {}
    for (provider, state), n in snap.received.items():
        if state != InboundState.SKIPPED:
            received[provider] = received.get(provider, 0) + n
    print(f"fax-bridge on {db.parent}: " + (f"running (pid {pid})" if pid else "not running"))
    print("fax jobs:   " + ", ".join(f"{s} {n}" for s, n in snap.jobs.items()))
    print("received:   " + ", ".join(f"{p} {n}" for p, n in received.items()))
    print("emails:     " + ", ".join(f"{s} {n}" for s, n in snap.emails.items()))
    print("queues:     " + ", ".join(
        f"{q} {d}" + (f" (oldest {_ago(a)})" if d else "") for q, (d, a) in snap.queues.items()))
    for label, at in (("last poll", snap.last_poll), ("last push", snap.last_push)):
        print(f"{label}:  " + (f"{_when(at)} ({_ago(max(0.0, now - at))} ago)" if at
                                else "never"))
    print(f"office:     {conversion}")
    print(f"ocr:        {reading}")
    print("attention:  " + ("nothing" if not attention else ""))
    for line in attention:
        print(f"  - {line}")
    return 0


def _job_data(j: Job) -> dict[str, Any]:
    return {"id": j.id, "state": j.state, "number": j.number, "recipient": j.recipient,
            "sender": j.sender, "attempts": j.attempts, "fax_id": j.fax_id,
            "provider_status": j.provider_status, "pages_sent": j.pages_sent,
            "created_at": j.created_at, "submitted_at": j.submitted_at,
            "finished_at": j.finished_at, "detail": j.detail, "send_at": j.send_at,
            "options": {"resolution": j.resolution, "paper_size": j.paper_size,
                        "cover": j.cover, "cover_sent": j.cover_sent}}


def cmd_list(args: argparse.Namespace) -> int:
    db = _database(args)

    async def run() -> None:
        store = await Store.open(db)
        try:
            if args.mail is not None:
                mails = await store.outbox.latest(MailState(args.mail) if args.mail else None,
                                          args.limit)
            else:
                jobs = await store.jobs.latest(JobState(args.state) if args.state else None,
                                        args.limit)
        finally:
            await store.close()
        if args.mail is not None:
            _print_mails(mails, args.json)
            return
        if args.json:
            print(json.dumps([_job_data(j) for j in jobs], indent=2, ensure_ascii=False))
            return
        print(f"{'job':>6}  {'state':<9}  {'number':<16}  {'created':<19}  {'sender':<28}  "
              "detail")
        for j in jobs:
            print(f"{j.id:>6}  {j.state:<9}  +{j.number:<15}  {_when(j.created_at):<19}  "
                  f"{j.sender[:28]:<28}  {j.detail[:60]}")

    asyncio.run(run())
    return 0


async def _existing_job(store: Store, job_id: int) -> Job:
    """The job the operator named, or `NotFound` in words that say where to look."""
    job = await store.jobs.get(job_id)
    if job is None:
        raise NotFound(f"there is no fax job {job_id} (fax-bridge list shows them)")
    return job


def _attempt_data(a: Attempt) -> dict[str, Any]:
    return {"fax_id": a.fax_id, "submitted_at": a.submitted_at, "status": a.status,
            "pages": a.pages, "tried": a.tried, "message": a.result_message,
            "finished_at": a.finished_at, "redial_at": a.redial_at, "matched": a.matched}


def _attempt_line(a: Attempt) -> str:
    pages = "pages not reported" if a.pages is None else f"{a.pages} page(s) sent"
    return (f"{_when(a.submitted_at)} fax {a.fax_id}: {a.status or 'no status yet'}, {pages}"
            + (f", FaxMAX dialled {a.tried} times" if a.tried and a.tried > 1 else "")
            + (f"; dialled again at {_when(a.redial_at)}" if a.redial_at else "")
            + (f" (matched by {a.matched})" if a.matched else ""))


def cmd_show(args: argparse.Namespace) -> int:
    db = _database(args)
    window = _load(args).faxmax.match_window if not args.data_dir else DEFAULT_WINDOW

    async def run() -> tuple[Job, Message, list[Attempt], list[tuple[float, str, str]],
                             list[Unmatched]]:
        store = await Store.open(db)
        try:
            job = await _existing_job(store, args.job)
            message = await store.jobs.message(job.message)
            assert message is not None  # jobs reference their message
            attempts = await store.jobs.attempts(job)
            pushes = [push for a in attempts for push in await store.jobs.status_events(a.fax_id)]
            maybe: list[Unmatched] = []
            if job.state is JobState.UNKNOWN and job.fax_id is None:
                maybe = [u for u in await store.jobs.unmatched(window) if job.id in u.candidates]
            return job, message, attempts, pushes, maybe
        finally:
            await store.close()

    job, message, attempts, pushes, maybe = asyncio.run(run())
    if args.json:
        print(json.dumps({**_job_data(job), "mail": {
            "id": message.id, "state": message.state, "from": message.header_from,
            "envelope_from": message.mail_from, "subject": message.subject,
            "message_id": message.message_id, "received_at": message.received_at,
            "pages": message.pages, "left_out": list(message.left_out),
            "error": message.error, "document": message.document_path},
            "attempts": [_attempt_data(a) for a in attempts],
            "status_pushes": [{"received_at": at, "status": status, "message": text}
                              for at, status, text in pushes],
            "possible_faxes": [_unmatched_data(u) for u in maybe]},
            indent=2, ensure_ascii=False))
        return 0
    rows = [
        ("to", f"+{job.number} ({job.recipient})"),
        ("from", f"{message.header_from or message.mail_from} (envelope {message.mail_from})"),
        ("subject", message.subject or "-"),
        ("message-id", message.message_id or "-"),
        ("received", _when(message.received_at)),
        ("pages", str(message.pages) if message.pages is not None else "not converted yet"),
        ("left out", ", ".join(message.left_out) or "nothing"),
        ("scheduled", _when(job.send_at)),
        ("options", ", ".join(f"{k} {v}" for k, v in (
            ("resolution", job.resolution), ("paper size", job.paper_size),
            ("cover", job.cover)) if v) or "the operator's"),
        ("attempts", f"{job.attempts} send call(s), {job.dials} dial(s) this round"),
        ("submitted", _when(job.submitted_at)
         + (f" (FaxMAX fax id {job.fax_id}"
            + (f", matched by {job.matched})" if job.matched else ")") if job.fax_id else "")),
        ("finished", _when(job.finished_at)),
        ("provider", job.provider_status or "-"),
        ("detail", job.detail or message.error or "-"),
    ]
    print(f"fax job {job.id}: {job.state}")
    for label, text in rows:
        print(f"  {label + ':':<12} {text}")
    for n, attempt in enumerate(attempts, start=1):
        print(f"  {f'attempt {n}:':<12} {_attempt_line(attempt)}")
    for at, status, text in pushes:
        print(f"  {'push:':<12} {_when(at)} {status} {text}".rstrip())
    for u in maybe:
        print(f"  {'maybe:':<12} FaxMAX fax {u.fax_id} ({u.statuses}), requested "
              f"{_when(u.requested_at)}; also near the calls of job(s) "
              f"{', '.join(str(c) for c in u.candidates if c != job.id) or '-'}")
    return 0


def _unmatched_data(u: Unmatched) -> dict[str, Any]:
    return {"fax_id": u.fax_id, "number": u.number, "requested_at": u.requested_at,
            "received_at": u.received_at, "statuses": u.statuses,
            "candidates": list(u.candidates)}


def cmd_unmatched(args: argparse.Namespace) -> int:
    """Status pushes for faxes no job knows: a fax sent by other means on the account, or
    the fax of an `unknown` job that could not be told apart from another (two candidates) or
    was called outside `faxmax.match_window`. An operator who can tell them apart (by the
    recipient's word, FaxMAX's panel) resends or leaves each job (`fax-bridge retry`)."""
    db = _database(args)
    window = args.window if args.window is not None else _load(args).faxmax.match_window

    async def run() -> list[Unmatched]:
        store = await Store.open(db)
        try:
            return await store.jobs.unmatched(window)
        finally:
            await store.close()

    found = asyncio.run(run())
    if args.json:
        print(json.dumps([_unmatched_data(u) for u in found], indent=2, ensure_ascii=False))
        return 0
    if not found:
        print("every status push belongs to a known fax")
        return 0
    print(f"{'FaxMAX fax':<36}  {'number':<16}  {'requested':<19}  {'unknown jobs near it':<20}"
          "  statuses")
    for u in found:
        jobs = ", ".join(map(str, u.candidates)) or "none"
        print(f"{u.fax_id:<36}  +{u.number:<15}  {_when(u.requested_at):<19}  {jobs:<20}  "
              f"{u.statuses}")
    return 0


def _print_mails(mails: list[MailInfo], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"id": m.id, "state": m.state, "message_id": m.message_id,
                           "recipients": list(m.recipients), "attempts": m.attempts,
                           "last_error": m.last_error} for m in mails], indent=2))
        return
    print(f"{'mail':>6}  {'state':<8}  {'attempts':>8}  {'to':<30}  last error")
    for m in mails:
        print(f"{m.id:>6}  {m.state:<8}  {m.attempts:>8}  {', '.join(m.recipients)[:30]:<30}  "
              f"{m.last_error[:60]}")


def cmd_retry(args: argparse.Namespace) -> int:
    db = _database(args)
    if (args.job is None) == (args.mail is None):
        raise BridgeError("name a fax job (fax-bridge retry 17) or an email "
                          "(fax-bridge retry --mail 5)")

    async def run() -> str | None:
        store = await Store.open(db)
        try:
            now = SystemClock().now()
            if args.mail is not None:
                if await store.outbox.requeue(args.mail, now):
                    return None
                return (f"mail {args.mail} is neither given up nor waiting (see fax-bridge list "
                        "--mail failed)")
            await _existing_job(store, args.job)
            return await store.jobs.requeue(args.job, now)
        finally:
            await store.close()

    refusal = asyncio.run(run())
    if refusal is not None:
        print(f"fax-bridge: {refusal}; nothing resent", file=sys.stderr)
        return 1
    what = f"job {args.job}" if args.mail is None else f"mail {args.mail}"
    print(f"{what} queued again; {_nudge(db)}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a fax job that is not sent yet; its sender gets a "cancelled" report."""
    db = _database(args)

    async def run() -> str | None:
        store = await Store.open(db)
        try:
            await _existing_job(store, args.job)
            return await store.jobs.cancel(args.job, SystemClock().now())
        finally:
            await store.close()

    refusal = asyncio.run(run())
    if refusal is not None:
        print(f"fax-bridge: {refusal}; nothing cancelled", file=sys.stderr)
        return 1
    print(f"job {args.job} cancelled; {_nudge(db, 'reports it', 'it is reported')}")
    return 0


def _nudge(db: Path, does: str = "sends it", later: str = "it is sent") -> str:
    try:
        if wake_running(db.parent):
            return f"the running service was told and {does} now"
    except PermissionError:
        return ("the running service belongs to another user, so it could not be told; it "
                f"{does} within a minute")
    return f"no service is running on this data directory; {later} when one starts"


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent copy of the live database, taken while the service runs."""
    db = _database(args)
    target = Path(args.file)
    if target.exists():
        raise BridgeError(f"{target} exists; name a new file")

    async def run() -> None:
        store = await Store.open(db)
        try:
            await store.upkeep.backup(target)
        finally:
            await store.close()

    asyncio.run(run())
    print(f"backup of {db} written to {target}")
    return 0


def cmd_replay_quarantine(args: argparse.Namespace) -> int:
    """Run kept push bodies through the push handling again, e.g. after a fix."""
    from bridge.ingress.pushes import SOURCE, PushProcessor
    from bridge.pipeline import build_pipeline

    settings = _load(args)
    db = _database(args)

    async def replay(pushes: PushProcessor, store: Store, clock: SystemClock) -> int:
        left = 0
        for item in await store.inbound.quarantined(pending_only=True):
            if item.source != SOURCE:
                continue
            outcome = await pushes.process(item.body, quarantine=False)
            if outcome.not_understood:
                left += 1
                print(f"#{item.id}: still not understood: "
                      f"{'; '.join(outcome.not_understood)}")
                continue
            await store.inbound.replayed(item.id, clock.now())
            print(f"#{item.id}: replayed ({outcome.status_events} status event(s), "
                  f"{len(outcome.new_fax_ids)} new fax(es))")
        return left

    async def run() -> int:
        store = await Store.open(db)
        try:
            clock = SystemClock()
            # The service's own push handling. Its workers are not run here: the running
            # service, told by `_nudge`, sends what the replay queued.
            pipeline = build_pipeline(settings, store, clock)
            try:
                return await replay(pipeline.pushes, store, clock)
            finally:
                await pipeline.close()
        finally:
            await store.close()

    left = asyncio.run(run())
    print(f"done; {_nudge(db)}")
    return 1 if left else 0
