"""A start that cannot work exits cleanly: the real `fax-bridge serve` with a port in use, a
certificate it cannot read or use, a database it cannot open, prints one line on standard
error that says what, and exits 1: no traceback, no log lines, no asyncio or aiohttp noise
("Unclosed client session", "Task was destroyed but it is pending")."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge.simulators import FaxMaxSimulator
from tests.process import ServeProcess
from tests.settings import settings_for

NOISE = ("Traceback", "Unclosed", "Task was destroyed", "Exception ignored", "Error in sys")


@pytest.fixture
def port_in_use() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


async def fails(tmp_path: Path, sim: FaxMaxSimulator, *, data_dir: Path | None = None,
                **sections: dict[str, Any]) -> str:
    """The one line `fax-bridge serve` prints as it exits 1. With 秒速FAX Plus enabled too, so
    that both providers' clients exist when the start fails."""
    settings = settings_for(tmp_path, sim.url, None, byosoku={
        "enabled": True, "log_url": "http://127.0.0.1:9/receive/log",
        "pdf_url": "http://127.0.0.1:9/receive/pdf"}, **sections)
    if data_dir is not None:
        settings = replace(settings, data_dir=str(data_dir))
    code, out, err = await ServeProcess(settings, tmp_path).start_failing()
    assert code == 1, err
    assert out == ""
    assert not any(noise in err for noise in NOISE), err
    [line] = err.splitlines()
    return line


async def test_the_smtp_port_in_use(tmp_path: Path, faxmax: FaxMaxSimulator,
                                    port_in_use: int) -> None:
    line = await fails(tmp_path, faxmax, smtp={"listen": f"127.0.0.1:{port_in_use}"})
    assert line.startswith(f"fax-bridge: smtp.listen: cannot listen on 127.0.0.1:{port_in_use}: ")
    assert line.endswith("address already in use")


async def test_the_http_port_in_use_after_smtp_is_bound(
    tmp_path: Path, faxmax: FaxMaxSimulator, port_in_use: int
) -> None:
    line = await fails(tmp_path, faxmax, http={"listen": f"127.0.0.1:{port_in_use}"})
    assert line.startswith(f"fax-bridge: http.listen: cannot listen on 127.0.0.1:{port_in_use}: ")
    assert faxmax.requests == []  # no worker ran


@pytest.mark.parametrize("problem", ["missing", "directory", "not PEM"])
async def test_a_certificate_that_cannot_be_read_or_used(
    tmp_path: Path, faxmax: FaxMaxSimulator, problem: str
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    if problem == "directory":
        cert.mkdir()
    elif problem == "not PEM":
        cert.write_text("not a certificate\n")
    line = await fails(tmp_path, faxmax, smtp={"tls_cert": str(cert), "tls_key": str(key)})
    if problem == "not PEM":  # with OpenSSL's own words after it
        assert line.startswith(f"fax-bridge: smtp.tls_cert / smtp.tls_key: {cert} and {key} "
                               "are not a PEM certificate chain and its private key ("), line
    else:
        why = "No such file or directory" if problem == "missing" else "Is a directory"
        assert line == f"fax-bridge: smtp.tls_cert: cannot read {cert}: {why}"


@pytest.mark.parametrize("problem", ["not a database", "a directory", "no data directory"])
async def test_a_database_that_cannot_be_opened(
    tmp_path: Path, faxmax: FaxMaxSimulator, problem: str
) -> None:
    data = tmp_path / "data"
    db = data / "fax-bridge.sqlite3"
    if problem == "no data directory":
        (tmp_path / "file").write_text("")
        data = tmp_path / "file" / "data"
    else:
        data.mkdir()
        if problem == "a directory":
            db.mkdir()
        else:
            db.write_bytes(b"this is not SQLite " * 100)
    line = await fails(tmp_path, faxmax, data_dir=data)
    assert line == {
        "not a database": f"fax-bridge: data_dir: cannot open the database {db}: file is not a "
                          "database",
        "a directory": f"fax-bridge: data_dir: cannot open the database {db}: unable to open "
                       "database file",
        "no data directory": f"fax-bridge: data_dir: cannot create {data}: Not a directory",
    }[problem], line
