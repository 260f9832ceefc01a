"""Headless Chromium for browser tests: Debian's binary, driven by Playwright.

Playwright's own browser download cannot work here; `./dev test` installs Debian's `chromium`
when it can, and browser tests skip with this reason where it is missing.
"""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling Google's hosts, which the
# closed network refuses; the rest keep a root, GPU-less, headless run quiet and deterministic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_missing() -> str | None:
    """Why browser tests cannot run here, or None."""
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    return None


requires_chromium = pytest.mark.skipif(
    chromium_missing() is not None, reason=chromium_missing() or ""
)
