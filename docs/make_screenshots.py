"""Screenshots of the debugger's main states at 1366x768, saved as docs/debugger-*.png.

    python docs/make_screenshots.py

Starts the ComfyUI emulator and ComfyGate on loopback ports (temporary folders, the bundled example
workflows in the library) and drives Debian's Chromium with Playwright. Nothing is downloaded.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
PROJECT = DOCS.parent
sys.path.insert(0, str(PROJECT))

from playwright.sync_api import sync_playwright  # noqa: E402

from config import Settings  # noqa: E402
from emulator.server import EmulatorThread  # noqa: E402
from main import create_app  # noqa: E402
from tests.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.servers import AppServer, free_port  # noqa: E402


def settings(tmp: Path, server: str) -> Settings:
    return Settings(
        comfyui_server=server,
        comfyui_servers=[],
        workflows_dir=tmp / "workflows",
        uploads_dir=tmp / "uploads",
        outputs_dir=tmp / "outputs",
        data_dir=tmp / "data",
        _env_file=None,
    )


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="comfygate-shots-"))
    shutil.copytree(PROJECT / "workflows", tmp / "workflows")
    emulator = EmulatorThread(step_delay=0.12, base_dir=tmp / "emulator").start()
    gate = AppServer(create_app(settings(tmp, emulator.url))).start()
    down = AppServer(create_app(settings(tmp / "down", f"127.0.0.1:{free_port()}"))).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(gate.url + "/")
            page.wait_for_selector("#live.live-open")
            page.wait_for_selector('#library-select option[value="sd_txt2img_api.json"]', state="attached")
            page.select_option("#library-select", "sd_txt2img_api.json")
            page.wait_for_selector(".field")
            page.wait_for_timeout(4500)  # let the "loaded" toast go
            page.screenshot(path=str(DOCS / "debugger-loaded.png"))

            # a finished run first, so the "in progress" shot shows both kinds of card
            page.fill('[data-key="6.text"] textarea', "a lighthouse on a cliff at dawn, oil painting")
            page.select_option('[data-key="3.seed"] select.seed-mode', "randomize")
            page.click("#run")
            page.wait_for_selector('.run[data-status="completed"] img.output')
            page.click("#run")
            page.wait_for_function(
                "() => /step (8|9|1\\d)\\/20/.test(document.querySelector('.run .progress-text')?.textContent)"
            )
            page.screenshot(path=str(DOCS / "debugger-running.png"))

            page.wait_for_function("() => document.querySelectorAll('.run[data-status=\"completed\"]').length === 2")
            page.click('.tab[data-side="history"]')
            page.wait_for_selector(".history-item .history-thumb img")
            page.wait_for_timeout(4000)
            page.screenshot(path=str(DOCS / "debugger-gallery.png"))

            # every image of a run in the viewer
            page.locator(".run button.thumb").first.click()
            page.wait_for_selector("dialog.lightbox[open]")
            page.wait_for_timeout(400)
            page.screenshot(path=str(DOCS / "debugger-lightbox.png"))
            page.keyboard.press("Escape")

            # a sweep: steps x cfg, outputs side by side
            page.click("#sweep")
            page.select_option(".sweep-key >> nth=0", "3.steps")
            page.fill(".sweep-values >> nth=0", "4, 8, 12")
            page.select_option(".sweep-key >> nth=1", "3.cfg")
            page.fill(".sweep-values >> nth=1", "3, 7, 11")
            page.click(".sweep-run")
            page.wait_for_selector('article.sweep[data-status="done"]', timeout=60_000)
            page.wait_for_timeout(4500)
            page.screenshot(path=str(DOCS / "debugger-sweep.png"))

            page.fill('[data-key="3.steps"] input', "0")
            page.fill('[data-key="3.cfg"] input', "250")
            page.click("#run")
            page.wait_for_selector('.field.invalid[data-key="3.steps"]')
            page.wait_for_timeout(600)
            page.screenshot(path=str(DOCS / "debugger-validation-error.png"))

            # a small screen: the side panels become a drawer
            small = browser.new_page(viewport={"width": 1024, "height": 700})
            small.goto(gate.url + "/")
            small.wait_for_selector("#live.live-open")
            small.select_option("#library-select", "sd_txt2img_ui.json")
            small.wait_for_selector(".field")
            small.click("#drawer-toggle")
            small.click("#tab-history")
            small.wait_for_selector(".history-item .history-thumb img")
            small.wait_for_timeout(4500)
            small.screenshot(path=str(DOCS / "debugger-small-screen.png"))

            page.goto(down.url + "/")
            page.wait_for_selector("#banner:not([hidden])")
            page.wait_for_timeout(300)
            page.screenshot(path=str(DOCS / "debugger-backend-down.png"))
            browser.close()
    finally:
        down.stop()
        gate.stop()
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for shot in sorted(DOCS.glob("debugger-*.png")):
        print(shot.relative_to(PROJECT))


if __name__ == "__main__":
    main()
