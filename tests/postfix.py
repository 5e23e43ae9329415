"""A private Postfix instance on 127.0.0.1, for the tests that put a real Postfix in front of
and behind the bridge.

The instance has its own configuration directory, queue, data directory, log file and
mailboxes, all in one temporary directory; it never touches /etc/postfix/main.cf or the
system's mail queue, and it is stopped and removed at the end even when the test fails.

- main.cf is the operator's part, `deploy/postfix/main.cf` exactly as shipped (its map paths
  pointed at this instance's copies), followed by the test-only lines: ports, directories,
  loopback only, no DNS, and a virtual(8) Maildir domain `example.com` that stands for the
  users' mailboxes.
- master.cf is written here: every service without chroot (so nothing has to be copied into
  a jail), an smtpd on a free loopback port, and postlogd for `maillog_file`.
- Mail goes in with `sendmail -C DIR` (local submission, via postdrop and pickup) or with
  `swaks` (SMTP submission to the instance's smtpd, from any loopback address).

Postfix must be started as root (its daemons switch to the `postfix` user), and those daemons
must be able to reach the directory: pytest's own temporary directories are mode 0700, so the
instance lives in a directory of its own under /tmp, mode 0755.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import os
import pwd
import re
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "deploy" / "postfix"
SHIPPED_MAP_DIR = "/etc/postfix/fax-bridge/"  # where deploy/postfix/main.cf expects its maps
SBIN_PATH = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))
MAILBOXES = {  # virtual(8) mailboxes of the example.com domain; a trailing slash = Maildir
    "alice@example.com": "alice/",
    "office@example.com": "office/",
    "fax-admin@example.com": "fax-admin/",
}

# Every service runs outside a chroot jail (5th column "n"): a jail would need copies of
# /etc/services, /etc/hosts, the resolver files and the maps inside the instance directory.
MASTER_CF = """\
# service  type  private unpriv  chroot  wakeup  maxproc command + args
{smtpd_listen} inet n - n - - smtpd
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
virtual    unix  -       n       n       -       -       virtual
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""

TEST_MAIN_CF = """
# ---- test instance only (tests/postfix.py); everything above is deploy/postfix/main.cf ----
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
# Log to a file instead of syslog (there is none in CI), through postlogd in master.cf.
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 no local delivery in this instance
alias_maps =
alias_database =
biff = no
# Only 127.0.0.1 is "local": a client on 127.0.0.2 plays a stranger on the Internet.
mynetworks = {mynetworks}
# No DNS: every next hop is an address in brackets, and smtpd does not look up clients.
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
# The users' mailboxes: example.com is delivered by virtual(8) into Maildirs under mail/.
virtual_mailbox_domains = example.com
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = texthash:{conf}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
# Deferred mail is retried within seconds, not minutes.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""


def skip_reason() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if shutil.which("postfix", path=SBIN_PATH) is None:
        return "Postfix is not installed (no postfix command in PATH, /usr/sbin or /sbin)"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root (its daemons change user)"
    return None


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A free loopback port, held (bound, not listening) until the block ends: Postfix must be
    told its port in master.cf, and while it is held no other `bind(port 0)` (the bridge's
    listeners) can be given the same port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with reserved_port() as port:
        return port


def mailbox_owner() -> tuple[int, int]:
    """The uid/gid virtual(8) delivers as: `nobody`, which exists everywhere and is above
    virtual_minimum_uid (100)."""
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True)
class Run:
    """A finished command: its exit code and what it printed."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def run(*argv: str, stdin: bytes | None = None, timeout: float = 20.0) -> Run:
    """Run a command without blocking the event loop (the bridge shares it)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PATH": SBIN_PATH})
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise AssertionError(f"{' '.join(argv)} did not finish within {timeout}s") from None
    assert proc.returncode is not None
    return Run(tuple(argv), proc.returncode, out.decode(errors="replace"),
               err.decode(errors="replace"))


class PostfixInstance:
    """One private Postfix: `await start()`, use, `await stop()` (or `async with`)."""

    def __init__(self, *, fax_bridge_port: int, smtpd_port: int | None = None,
                 mynetworks: str = "127.0.0.1/32") -> None:
        self.fax_bridge_port = fax_bridge_port
        self.smtpd_port = smtpd_port or free_port()
        self.mynetworks = mynetworks
        self.root = Path(tempfile.mkdtemp(prefix="fax-bridge-postfix-", dir="/tmp"))
        self.root.chmod(0o755)
        self.conf = self.root / "conf"
        self.maillog = self.root / "maillog"
        self.mail = self.root / "mail"
        self.started = False
        self._final_log: str | None = None  # the maillog, kept when the directory is removed

    # --- configuration -----------------------------------------------------------------

    def main_cf(self) -> str:
        """The shipped lines, with the map paths pointed here, then the test-only lines."""
        shipped = (SHIPPED / "main.cf").read_text()
        assert SHIPPED_MAP_DIR in shipped, f"deploy/postfix/main.cf does not use {SHIPPED_MAP_DIR}"
        uid, gid = mailbox_owner()
        return shipped.replace(SHIPPED_MAP_DIR, f"{self.conf}/") + TEST_MAIN_CF.format(
            root=self.root, conf=self.conf, mynetworks=self.mynetworks, uid=uid, gid=gid)

    def transport_map(self) -> str:
        """The shipped transport map with the bridge's port replaced by the test bridge's."""
        shipped = (SHIPPED / "transport").read_text()
        pattern = re.compile(r"(smtp:\[127\.0\.0\.1\]):2525\b")
        assert pattern.search(shipped), "deploy/postfix/transport no longer routes to :2525"
        return pattern.sub(rf"\g<1>:{self.fax_bridge_port}", shipped)

    def write_config(self) -> None:
        self.conf.mkdir(mode=0o755)
        (self.root / "queue").mkdir(mode=0o755)  # every postfix command chdirs here first
        self.mail.mkdir(mode=0o755)
        uid, gid = mailbox_owner()
        os.chown(self.mail, uid, gid)  # virtual(8) creates the Maildirs as that user
        (self.conf / "main.cf").write_text(self.main_cf())
        (self.conf / "master.cf").write_text(
            MASTER_CF.format(smtpd_listen=f"127.0.0.1:{self.smtpd_port}"))
        (self.conf / "transport").write_text(self.transport_map())
        shutil.copyfile(SHIPPED / "fax_access", self.conf / "fax_access")
        (self.conf / "vmailbox").write_text(
            "".join(f"{address} {path}\n" for address, path in MAILBOXES.items()))
        # Postfix does not trust a main.cf modified within the last second (it might be half
        # written): every command sleeps and reads it again, ~2 s each. Date the files back.
        an_hour_ago = time.time() - 3600
        for path in self.conf.iterdir():
            path.chmod(0o644)
            os.utime(path, (an_hour_ago, an_hour_ago))

    # --- life cycle --------------------------------------------------------------------

    async def postfix(self, *args: str, check: bool = True) -> Run:
        result = await run("postfix", "-c", str(self.conf), *args)
        if check and result.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.output}\n{self.log_excerpt()}")
        return result

    async def start(self) -> None:
        self.write_config()
        # `postfix start` first runs what `postfix check` runs: post-install creates the queue
        # directories with their owners and modes, and ownership and permission problems are
        # logged as warnings (to maillog_file, not to the terminal).
        self.started = True
        await self.postfix("start")
        await self._wait_listening()
        self.assert_clean_log()

    async def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.smtpd_port)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"Postfix smtpd is not listening on "
                                         f"{self.smtpd_port}\n{self.log_excerpt()}") from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> None:
        """Stop the instance (abort it if it will not stop) and remove its directory."""
        try:
            if self.started:
                await self.postfix("stop", check=False)
                deadline = time.monotonic() + 10
                while (await self.postfix("status", check=False)).returncode == 0:
                    if time.monotonic() > deadline:
                        await self.postfix("abort", check=False)
                        break
                    await asyncio.sleep(0.05)
                self.started = False
        finally:
            self._final_log = self.log()
            shutil.rmtree(self.root, ignore_errors=True)

    async def __aenter__(self) -> PostfixInstance:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- submitting mail ---------------------------------------------------------------

    async def sendmail(self, message: bytes, *, sender: str, recipients: list[str]) -> Run:
        """Local submission, as a program on the Postfix host would send: sendmail(1) →
        postdrop → pickup. Postfix's SMTP restrictions do not apply to it."""
        result = await run("sendmail", "-C", str(self.conf), "-i", "-f", sender, "--",
                           *recipients, stdin=message)
        assert result.returncode == 0, f"sendmail failed: {result.output}\n{self.log_excerpt()}"
        return result

    async def swaks(self, message: bytes, *, sender: str, recipients: list[str],
                    source: str = "127.0.0.1") -> Run:
        """SMTP submission to this instance's smtpd from `source` (a loopback address);
        returns swaks' transcript (the message body itself is left out of it)."""
        return await run(
            "swaks", "--server", f"127.0.0.1:{self.smtpd_port}", "--local-interface", source,
            "--helo", "client.example.com", "--from", sender, "--to", ",".join(recipients),
            "--data", "-", "--suppress-data", "--timeout", "15", stdin=message)

    async def flush(self) -> None:
        """Ask the queue manager to try every deferred message now."""
        await run("postqueue", "-c", str(self.conf), "-f")

    async def queue(self) -> str:
        return (await run("postqueue", "-c", str(self.conf), "-p")).output

    # --- what happened -----------------------------------------------------------------

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def problems(self) -> list[str]:
        """Warnings, errors and fatal errors in the maillog (a misspelt or conflicting
        parameter shows up here: a daemon that cannot use its settings logs and exits).
        The machine's clock stepping under cleanup(8) is the host's doing, not the config's."""
        return [line for line in self.log().splitlines()
                if re.search(r"\]: (warning|error|fatal|panic): ", line)
                and not re.search(r"warning: (file system clock is \d+ seconds? ahead of local "
                                  r"clock|resetting file time stamps)", line)]

    def assert_clean_log(self) -> None:
        assert not self.problems(), "\n".join(["Postfix complained:", *self.problems(),
                                               self.log_excerpt()])

    def log_excerpt(self, chars: int = 6000) -> str:
        return f"--- Postfix maillog ({self.maillog}) ---\n{self.log()[-chars:]}"

    def maildir(self, address: str) -> list[EmailMessage]:
        """The messages delivered to a mailbox of example.com, oldest first."""
        new = self.mail / MAILBOXES[address] / "new"
        files = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name)) \
            if new.is_dir() else []
        messages = []
        for path in files:
            msg = email.message_from_bytes(path.read_bytes(), policy=default_policy)
            assert isinstance(msg, EmailMessage)
            messages.append(msg)
        return messages

    async def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        """Poll until `ready()`; flush the queue every 2 s meanwhile, in case something was
        deferred. On timeout the assertion carries the queue and the maillog."""
        deadline = time.monotonic() + timeout
        next_flush = time.monotonic() + 2
        while not ready():
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(f"{what}: not within {timeout}s\n--- postqueue -p ---\n"
                                     f"{await self.queue()}\n{self.log_excerpt()}")
            if now > next_flush:
                await self.flush()
                next_flush = now + 2
            await asyncio.sleep(0.02)

    async def wait_for_mail(self, address: str, n: int = 1,
                            timeout: float = 15.0) -> list[EmailMessage]:
        await self.wait_for(lambda: len(self.maildir(address)) >= n,
                            f"{n} message(s) in the Maildir of {address}", timeout)
        return self.maildir(address)

    async def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        regex = re.compile(pattern, re.MULTILINE)
        await self.wait_for(lambda: regex.search(self.log()) is not None,
                            f"maillog line matching {pattern!r}", timeout)
        found = regex.search(self.log())
        assert found is not None
        return found


@contextlib.asynccontextmanager
async def private_postfix(*, fax_bridge_port: int, smtpd_port: int | None = None,
                          mynetworks: str = "127.0.0.1/32") -> AsyncIterator[PostfixInstance]:
    """`async with private_postfix(fax_bridge_port=...) as postfix:`; prints the maillog at
    the end, which pytest shows only for a failed test."""
    instance = PostfixInstance(fax_bridge_port=fax_bridge_port, smtpd_port=smtpd_port,
                               mynetworks=mynetworks)
    try:
        async with instance:
            yield instance
    finally:
        print(instance.log_excerpt(50_000))
