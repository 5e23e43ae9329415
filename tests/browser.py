"""A real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium) for
the tests that look at an email as a mail client shows it.

`Browser.look(message, name)` writes the email's HTML part and the parts it references by
`cid:` into a folder, with each `cid:` turned into the file's name (as a mail client resolves
it), opens it at a phone's width (375 px, as Gmail on a phone) and a desktop's (1024 px), and
returns what was seen: whether the page is wider than the window, which images did not load,
and a screenshot of each width, kept in `SCREENSHOTS` for a reviewer to open. Nothing is
downloaded: the driver and the browser are Debian's, named by path, so Selenium Manager is
never asked, and the page may load nothing but its own files (`--host-resolver-rules` sends
every host name nowhere).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = Path(os.environ.get("FAX_BRIDGE_SCREENSHOTS", REPO / "build" / "screenshots"))
CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
WIDTHS = (375, 1024)
CID = re.compile(r"""cid:([^"'\s)>]+)""")


@dataclass(frozen=True)
class Look:
    """What one width of one email showed."""

    width: int
    page_width: int  # the document's scrollWidth: wider than `width` means sideways scrolling
    images: int
    broken: tuple[str, ...]  # images that did not load (their src)
    remote: tuple[str, ...]  # resources the page asked for that are not its own files
    screenshot: Path

    @property
    def overflows(self) -> bool:
        return self.page_width > self.width


def available() -> bool:
    return Path(CHROMIUM).exists() and Path(DRIVER).exists()


class Browser:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def look(self, message: EmailMessage, name: str, folder: Path) -> list[Look]:
        """`message`'s HTML part at each of `WIDTHS`; files go to `folder`, screenshots to
        `SCREENSHOTS/<name>-<width>.png`."""
        html_part = message.get_body(("html",))
        assert html_part is not None, f"{name}: the email has no HTML part"
        html = str(html_part.get_content())
        folder.mkdir(parents=True, exist_ok=True)
        for part in message.walk():
            content_id = part.get("Content-ID")
            if content_id:
                cid = content_id.strip().strip("<>")
                filename = re.sub(r"[^A-Za-z0-9._-]", "_", cid)
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                (folder / filename).write_bytes(payload)
                html = html.replace(f"cid:{cid}", filename)
        unresolved = CID.findall(html)
        assert not unresolved, f"{name}: cid: references with no part: {unresolved}"
        page = folder / f"{name}.html"
        page.write_text(html, encoding="utf-8")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        looks = []
        for width in WIDTHS:
            self.driver.set_window_size(width, 900)
            self.driver.get(page.as_uri())
            # The viewport, not the window, is what the page gets: size the window so that the
            # viewport is `width` wide.
            inner = int(self.driver.execute_script("return window.innerWidth"))
            if inner != width:
                self.driver.set_window_size(width + (width - inner), 900)
                self.driver.get(page.as_uri())
            seen = self.driver.execute_script(
                "const imgs = [...document.images];"
                "return {width: document.documentElement.scrollWidth,"
                " images: imgs.length,"
                " broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),"
                " remote: performance.getEntriesByType('resource').map(r => r.name)"
                "   .filter(n => !n.startsWith('file:') && !n.startsWith('data:'))}")
            shot = SCREENSHOTS / f"{name}-{width}.png"
            height = int(self.driver.execute_script(
                "return document.documentElement.scrollHeight"))
            self.driver.set_window_size(width + (width - inner if inner != width else 0),
                                        max(600, min(height + 100, 4000)))
            self.driver.save_screenshot(str(shot))
            looks.append(Look(width, int(seen["width"]), int(seen["images"]),
                              tuple(seen["broken"]), tuple(seen["remote"]), shot))
        return looks


@contextmanager
def chromium(profile: Path) -> Iterator[Browser]:
    """One headless Chromium for a test module; its profile under `profile`."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--hide-scrollbars",
                     "--force-device-scale-factor=1", f"--user-data-dir={profile}",
                     "--host-resolver-rules=MAP * ~NOTFOUND", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--lang=en-US"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
