"""The headless Chromium that the debugger tests and ``docs/make_screenshots.py`` drive through Playwright."""

from __future__ import annotations

import os
from pathlib import Path

# Debian's package; Playwright's own download is not used. COMFYGATE_CHROMIUM points elsewhere.
CHROMIUM = Path(os.environ.get("COMFYGATE_CHROMIUM") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
