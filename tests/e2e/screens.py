"""What the demo page's browser tests share: the two screens (a phone, 390 x 844, and a laptop,
1280 x 800), screenshots under artifacts/screenshots/ (git-ignored, for people to look at),
and the check that nothing is wider than the screen. The ``size`` and ``visitor`` fixtures
that use them are in conftest.py."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
SIZES = {"phone": {"width": 390, "height": 844}, "laptop": {"width": 1280, "height": 800}}
TIMEOUT_MS = 60_000


def shot(page: Page, size: str, state: str) -> None:
    """Save the whole page as artifacts/screenshots/<size>-<state>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{size}-{state}.png"), full_page=True)


def no_overflow(page: Page, size: str) -> None:
    """Nothing wider than the screen (scrollWidth, not innerWidth, which mobile Chromium widens)."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= SIZES[size]["width"], f"page {width} px wide on a {SIZES[size]['width']} px screen"
