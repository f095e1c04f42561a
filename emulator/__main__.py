"""``python -m emulator --port 8188``: the ComfyUI emulator as a server of its own."""

from emulator.server import main

main()
