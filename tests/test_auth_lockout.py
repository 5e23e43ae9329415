"""SMTP AUTH off the event loop, with a lock-out per address (docs/RELIABILITY.md S13).

The real service over STARTTLS (a throwaway CA, trustme), clients on their own loopback
addresses (127.0.0.0/8 is all loopback), a fake clock for the lock-out's window. The loop's
lag while 50 clients guess is a figure (bench/auth_storm.py); here, where the work runs and in
which order.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme

from bridge import passwords
from bridge.app import Bridge
from bridge.clock import FakeClock
from bridge.config import SmtpUser
from bridge.ingress import logins
from bridge.ingress.logins import address_key
from bridge.passwords import hash_password
from bridge.simulators import FaxMaxSimulator
from tests.settings import MakeBridge
from tests.waits import wait_until

T0 = 1_800_000_000.0  # 2027-01-15 11:00:00 +03, the start of `FakeClock`
LOCKED = ("4.7.0 Too many failed logins from {ip}; please try again after {time} +03 "
          "(in {wait})")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def bridge(make_bridge: MakeBridge, ca: trustme.CA, tmp_path: Path, clock: FakeClock,
                 faxmax: FaxMaxSimulator) -> AsyncIterator[Bridge]:
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    user = SmtpUser(name="alice", password_hash=hash_password("alice-pw"),
                    addresses=("alice@example.com",))
    yield await make_bridge(clock=clock, smtp={
        "trusted_networks": (), "tls_cert": str(tmp_path / "cert.pem"),
        "tls_key": str(tmp_path / "key.pem"), "users": (user,)})


async def connect(bridge: Bridge, ca: trustme.CA, source: str = "127.0.0.1") -> aiosmtplib.SMTP:
    """A client from `source`, after STARTTLS."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=bridge.smtp_port, tls_context=context,
                             start_tls=False, timeout=30, source_address=(source, 0))
    await client.connect()
    await client.ehlo()
    await client.starttls()
    await client.ehlo()
    return client


async def auth(client: aiosmtplib.SMTP, password: str) -> tuple[int, str]:
    """One AUTH PLAIN as alice (aiosmtplib's `login` would try every mechanism in turn)."""
    blob = base64.b64encode(f"\0alice\0{password}".encode())
    try:
        answer = await client.execute_command(b"AUTH", b"PLAIN", blob)
    except aiosmtplib.SMTPServerDisconnected:
        return 0, "disconnected"
    return answer.code, answer.message


async def closed(client: aiosmtplib.SMTP) -> bool:
    """Whether the server has closed the connection."""
    try:
        await client.execute_command(b"NOOP")
    except aiosmtplib.SMTPServerDisconnected:
        return True
    return False


def test_ipv4_addresses_count_alone_and_ipv6_ones_by_their_64() -> None:
    assert address_key(("192.0.2.7", 25)) == "192.0.2.7"
    assert address_key(("::ffff:192.0.2.7", 25, 0, 0)) == "192.0.2.7"
    assert address_key(("2001:db8:1:2:aaaa::1", 25, 0, 0)) == "2001:db8:1:2::/64"
    assert address_key(("2001:db8:1:2:bbbb::9", 25, 0, 0)) == "2001:db8:1:2::/64"
    assert address_key(("2001:db8:1:3::1", 25, 0, 0)) == "2001:db8:1:3::/64"


async def test_five_failures_lock_the_address_out_until_the_oldest_leaves_the_window(
    bridge: Bridge, ca: trustme.CA, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked_in: set[int] = set()
    verify = passwords.verify_password

    def noting_thread(password: bytes, encoded: str) -> bool:
        checked_in.add(threading.get_ident())
        return verify(password, encoded)

    monkeypatch.setattr(logins, "verify_password", noting_thread)
    client = await connect(bridge, ca)
    for n in range(5):  # 11:00 ... 11:04
        assert await auth(client, f"guess-{n}") == (
            535, "5.7.8 Authentication credentials invalid")
        clock.advance(60)
    assert threading.get_ident() not in checked_in and len(checked_in) == 1  # off the loop
    # 11:05: the sixth AUTH, with the right password, is not checked; the connection closes.
    assert await auth(client, "alice-pw") == (
        421, LOCKED.format(ip="127.0.0.1", time="11:15", wait="10 minutes"))
    assert await closed(client)
    clock.advance(9 * 60 + 59)  # 11:14:59: a new connection is greeted, its AUTH refused
    again = await connect(bridge, ca)
    assert await auth(again, "alice-pw") == (
        421, LOCKED.format(ip="127.0.0.1", time="11:15", wait="1 minute"))
    clock.advance(1)  # 11:15:00: the oldest failure has left the window
    again = await connect(bridge, ca)
    assert await auth(again, "alice-pw") == (235, "2.7.0 Authentication successful")
    await again.quit()
    # A sliding window: the failures of 11:01 to 11:04 still count, and a login did not
    # clear them; one more (11:15:30) locks it out until 11:01's leaves.
    clock.advance(30)
    again = await connect(bridge, ca)
    assert (await auth(again, "guess-5"))[0] == 535
    assert await auth(again, "alice-pw") == (
        421, LOCKED.format(ip="127.0.0.1", time="11:16", wait="1 minute"))


async def test_a_locked_out_address_does_not_lock_out_the_others(
    bridge: Bridge, ca: trustme.CA
) -> None:
    client = await connect(bridge, ca, "127.0.0.3")
    for n in range(5):
        assert (await auth(client, f"guess-{n}"))[0] == 535
    assert (await auth(client, "alice-pw"))[0] == 421
    other = await connect(bridge, ca, "127.0.0.4")
    assert await auth(other, "alice-pw") == (235, "2.7.0 Authentication successful")
    await other.quit()


async def test_parallel_connections_from_one_address_get_five_guesses_in_all(
    bridge: Bridge, ca: trustme.CA
) -> None:
    """One check at a time per address: ten connections guessing at once cannot all be
    checked before the first failures are counted."""
    clients = [await connect(bridge, ca, "127.0.0.5") for _ in range(10)]
    answers = await asyncio.gather(*(auth(c, f"guess-{n}") for n, c in enumerate(clients)))
    assert sorted(code for code, _ in answers) == [421] * 5 + [535] * 5


async def test_a_good_login_goes_before_fifty_guessers_that_already_failed(
    bridge: Bridge, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    """Fifty addresses have failed once and guess again, all at once; a person logging in
    from an address that has not failed is checked next, before the guesses still waiting."""
    guessers = [await connect(bridge, ca, f"127.0.1.{n}") for n in range(1, 51)]
    assert {(await auth(c, "guess"))[0] for c in guessers} == {535}
    assert bridge.pipeline is not None
    checks = bridge.pipeline.smtp_handler.logins
    caplog.set_level("INFO", logger="bridge.ingress.smtp")
    caplog.clear()
    storm = asyncio.gather(*(auth(c, "guess-again") for c in guessers))

    async def waiting() -> bool:
        return checks.waiting >= 40

    await wait_until(waiting, True)
    person = await connect(bridge, ca, "127.0.0.2")
    assert await auth(person, "alice-pw") == (235, "2.7.0 Authentication successful")
    answers: list[Any] = await storm
    assert [code for code, _ in answers] == [535] * 50  # every guess was answered
    lines = [r.getMessage() for r in caplog.records]
    success = next(i for i, line in enumerate(lines) if "authenticated as alice" in line)
    failed_after = [line for line in lines[success:] if "failed AUTH" in line]
    assert len(failed_after) >= 30, lines
    await person.quit()
