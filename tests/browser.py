"""Headless Chromium for the HTML page's tests and the README's screenshot of it.

Debian's chromium (`/usr/bin/chromium`, installed by .ci/run) driven by Playwright; nothing is
downloaded. Every request the page makes is recorded and aborted unless it is the page's own
file, and console errors and uncaught exceptions are kept, so a test sees what went wrong.

    python -m tests.browser      # rewrites docs/figures/resnet50_html.png
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, Route, sync_playwright

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
README_FIGURE = REPO / "docs" / "figures" / "resnet50_html.png"


@contextmanager
def chromium() -> Iterator[BrowserContext]:
    """A fresh headless Chromium (its own user-data-dir) for the duration of the block."""
    profiles = tempfile.TemporaryDirectory(prefix="resgraph-chromium-")
    with profiles as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport=VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class Opened:
    """A page opened from a file, with what it asked for and what it complained about."""

    page: Page
    url: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def open_file(context: BrowserContext, path: Path) -> Opened:
    """Open `path`, allowing no request but the file itself (the rest are recorded, aborted)."""
    page = context.new_page()
    opened = Opened(page, path.resolve().as_uri())

    def route(r: Route) -> None:
        opened.requests.append(r.request.url)
        if r.request.url == opened.url:
            r.continue_()
        else:
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.errors.append(f"uncaught: {e}"))
    page.on("dialog", lambda d: (opened.errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(opened.url, wait_until="load")
    return opened


def unfold_to(page: Page, node: str) -> None:
    """Unfold the stage and block that hold `node` by clicking them, as a person would."""
    box = page.locator(f'[data-node="{node}"]')
    stage = box.locator("xpath=ancestor::details[@data-part]")
    block = box.locator("xpath=ancestor::div[@data-block]")
    stage.locator(":scope > summary").click()
    if block.count():
        block.locator(":scope > details > summary").click()


def screenshot(context: BrowserContext, html: Path, png: Path) -> Opened:
    """The README's view of a page: layer1 and its first block unfolded, layer1.0.conv1
    selected, the viewport as a PNG."""
    opened = open_file(context, html)
    unfold_to(opened.page, "layer1.0.conv1")
    opened.page.locator('[data-node="layer1.0.conv1"]').click()
    opened.page.screenshot(path=str(png))
    return opened


def readme_figure(png: Path = README_FIGURE) -> None:
    """Render resnet50's page with the CLI and photograph it into `png`."""
    with tempfile.TemporaryDirectory() as folder:
        html = Path(folder) / "resnet50.html"
        command = ["graph", "specs/resnet50.yaml", "--format", "html", "-o", str(html)]
        subprocess.run([sys.executable, "-m", "resgraph", *command], cwd=REPO, check=True)
        with chromium() as context:
            opened = screenshot(context, html, png)
            if opened.errors:
                raise SystemExit(f"the page reported errors: {opened.errors}")


if __name__ == "__main__":
    readme_figure()
    print(README_FIGURE.relative_to(REPO))
