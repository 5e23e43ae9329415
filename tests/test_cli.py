"""The command line an operator and their scripts use against a running service: `status`,
`list`, `show` (tables and `--json`), `healthcheck`, the exit codes, and `--log-format json`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import sys
from pathlib import Path

from bridge.logs import JsonFormatter, Redactor
from bridge.simulators import FaxMaxSimulator
from tests.cli_runner import run_cli
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail
from tests.process import ServeProcess, job_states, start
from tests.relay import RelaySink
from tests.settings import settings_for
from tests.smtp_client import smtp_send
from tests.waits import wait_until

PDF = ("invoice.pdf", "application/pdf", make_pdf(2))


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = await asyncio.to_thread(run_cli, *args, env=env)
    return done.returncode, done.stdout, done.stderr


async def test_status_list_and_show_tell_an_operator_what_happened(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    faxmax.rejected_numbers.add("902122222526")
    process = await start(serve, tmp_path, faxmax, relay,
                          routing={"default": ("frontdesk@example.com",)})
    data = ["--data-dir", process.settings.data_dir]
    for n, number in enumerate(("02122222525", "02122222526")):
        sent = await smtp_send(process.smtp_port, fax_mail(
            PDF, to=f"{number}@fax.local", message_id=f"<m{n}@example.com>"),
            rcpts=[f"{number}@fax.local"])
        assert sent.data is not None and sent.data[0] == 250
    await faxmax.push_incoming(tiff=make_tiff(1), cld="902121110000", cli="903125550000")
    await wait_until(lambda: asyncio.to_thread(job_states, process), ["delivered", "failed"])
    await relay.wait_for(3)

    assert process.proc is not None
    code, out, _ = await cli("status", *data)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (f"fax-bridge on {process.settings.data_dir}: running "
                        f"(pid {process.proc.pid})")
    assert lines[1] == ("fax jobs:   queued 0, scheduled 0, sending 0, submitted 0, delivered "
                        "1, failed 1, unknown 0, cancelled 0")
    assert lines[2] == "received:   faxmax 1, byosoku 0"
    assert lines[4].startswith("queues:     convert 0, send 0, status 0, report 0, inbound 0")
    assert lines[5] == "last poll:  never"
    assert lines[6].startswith("last push:  ") and lines[6].endswith(" s ago)")
    assert lines[7].startswith("office:     available: LibreOffice ")
    assert lines[8].startswith("ocr:        ")  # as the service would find it, or why not
    assert lines[9:] == ["attention:  ", "  - 1 fax(es) failed (their senders were told): "
                                         "fax-bridge list --state failed"]

    code, out, _ = await cli("status", "--json", *data)
    status = json.loads(out)
    assert status["jobs"]["delivered"] == 1 and status["running_pid"] == process.proc.pid
    assert status["queues"]["email"] == {"depth": 0, "oldest_age_seconds": 0}
    assert status["last_poll"] is None and status["last_push"] > 0

    code, out, _ = await cli("list", *data)
    header, *rows = out.splitlines()
    assert header.split() == ["job", "state", "number", "created", "sender", "detail"]
    assert [row.split()[:3] for row in rows] == [["2", "failed", "+902122222526"],
                                                 ["1", "delivered", "+902122222525"]]
    code, out, _ = await cli("list", "--state", "failed", "--json", *data)
    [failed] = json.loads(out)
    assert (failed["id"], failed["recipient"]) == (2, "02122222526@fax.local")

    code, out, _ = await cli("show", "1", *data)
    assert code == 0
    shown = out.splitlines()
    assert shown[0] == "fax job 1: delivered"
    assert "  to:          +902122222525 (02122222525@fax.local)" in shown
    assert "  subject:     Invoice 42" in shown
    assert "  message-id:  <m0@example.com>" in shown
    assert "  pages:       2" in shown
    assert any(line.startswith("  push:") and " SUCCESS" in line for line in shown)
    code, out, _ = await cli("show", "2", "--json", *data)
    job = json.loads(out)
    assert (job["state"], job["mail"]["subject"], job["mail"]["pages"]) == ("failed",
                                                                           "Invoice 42", 2)
    assert job["fax_id"] is None and job["status_pushes"] == []
    assert job["detail"]  # FaxMAX's reason, which the sender was sent too

    assert await cli("show", "99", *data) == (
        3, "", "fax-bridge: there is no fax job 99 (fax-bridge list shows them)\n")
    assert (await cli("retry", "99", *data))[0] == 3
    code, _, err = await cli("show", *data)
    assert code == 2 and "the following arguments are required: job" in err

    # `fax-bridge list | head -1`: the reader leaves early; no traceback, no error.
    read_end, write_end = os.pipe()
    os.close(read_end)
    reader_gone = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "list", *data, stdout=write_end,
        stderr=asyncio.subprocess.PIPE)
    os.close(write_end)
    _, complaint = await reader_gone.communicate()
    assert (reader_gone.returncode, complaint) == (0, b"")
    await process.stop()


async def test_healthcheck_exits_0_for_a_healthy_service_and_1_otherwise(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    with socket.socket() as probe:  # a fixed port, so that the command finds it in the config
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await start(serve, tmp_path, faxmax, relay, http={"listen": f"127.0.0.1:{port}"})
    config = ["-c", str(process.config_path)]
    assert await cli("healthcheck", *config, env=process.env) == (0, "ok\n", "")
    db = process.db_path
    db.chmod(0o444)
    try:
        code, out, _ = await cli("healthcheck", *config, env=process.env)
        assert (code, out) == (1, f"unhealthy: the database file {db} is read-only "
                                  "(mode -r--r--r--)\n")
    finally:
        db.chmod(0o644)
    await process.stop()
    code, out, err = await cli("healthcheck", *config, env=process.env)
    assert (code, out) == (1, "")
    assert err.startswith(f"fax-bridge: cannot reach http://127.0.0.1:{process.http_port}"
                          "/healthz: ")


async def test_json_logs_are_one_object_per_line_with_the_job_in_the_message(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    process = ServeProcess(settings_for(tmp_path, faxmax.url, relay.port), tmp_path)
    process.env["FAX_BRIDGE_LOG_FORMAT"] = "json"
    serve.append(process)
    await process.start()
    faxmax.push_url = process.push_url
    await smtp_send(process.smtp_port, fax_mail(PDF))
    await wait_until(lambda: asyncio.to_thread(job_states, process), ["delivered"])
    await process.stop()
    entries = [json.loads(line) for line in process.log().splitlines()]
    assert all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    assert all(e["time"].endswith("Z") for e in entries)
    messages = [e["message"] for e in entries]
    assert any(m.startswith("fax-bridge listening: SMTP 127.0.0.1:") for m in messages)
    assert any(m.startswith("job 1: ") for m in messages), messages
    assert messages[-1] == "fax-bridge stopped cleanly"
    for secret in (process.settings.faxmax.token, process.settings.http.push_token):
        assert secret not in process.log()


def test_secrets_are_redacted_from_messages_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Redactor(["s3cret-token", "pw"]))  # too short to redact safely: kept
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling %s with token %s", "https://faxmax.example/api", "s3cret-token")
        try:
            raise ValueError("bad token s3cret-token")
        except ValueError:
            logger.exception("job %d: failed", 7)
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "calling https://faxmax.example/api with token ***"
    assert second["message"] == "job 7: failed"
    assert second["exception"].endswith("ValueError: bad token ***")
    assert "s3cret-token" not in stream.getvalue()
