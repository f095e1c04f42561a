"""The same-host fast path's file handling: only regular files inside ComfyUI's output folder, atomically."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tasks import local_outputs
from tasks.local_outputs import fetch_local, locate


@pytest.fixture
def comfy(tmp_path: Path) -> Path:
    root = tmp_path / "comfy" / "output"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"small")
    (root / "big.bin").write_bytes(os.urandom(5000))
    (tmp_path / "comfy" / "secret.txt").write_text("outside the output folder")
    return root


@pytest.mark.parametrize(
    ("filename", "subfolder"),
    [
        ("../secret.txt", ""),
        ("secret.txt", ".."),
        ("secret.txt", "sub/../.."),
        ("/etc/hostname", ""),
        ("a.png", "/etc"),
        ("sub/a.png", ""),  # a name is a name, not a path
        ("a\x00.png", "sub"),
        ("", "sub"),
        (".", ""),
    ],
)
def test_names_that_would_leave_the_folder_are_refused(comfy: Path, filename: str, subfolder: str) -> None:
    assert locate(comfy, filename, subfolder) is None


def test_a_symlink_out_of_the_folder_is_refused(comfy: Path) -> None:
    (comfy / "link.png").symlink_to(comfy.parent / "secret.txt")
    (comfy / "linkdir").symlink_to(comfy.parent)
    assert locate(comfy, "link.png", "") is None
    assert locate(comfy, "secret.txt", "linkdir") is None
    assert fetch_local(comfy, "link.png", "", comfy.parent / "x", 1 << 20) is None


def test_a_small_file_is_read_and_written_atomically(comfy: Path, tmp_path: Path) -> None:
    dest = tmp_path / "outputs" / "t_a.png"
    dest.parent.mkdir()
    got = fetch_local(comfy, "a.png", "sub", dest, 1024)
    assert got is not None and got.data == b"small" and got.size == 5 and dest.read_bytes() == b"small"
    assert got.mtime == dest.stat().st_mtime
    assert [p.name for p in dest.parent.iterdir()] == ["t_a.png"]  # no temporary file left


def test_a_big_file_is_hard_linked_not_copied(comfy: Path, tmp_path: Path) -> None:
    dest = tmp_path / "t_big.bin"
    got = fetch_local(comfy, "big.bin", "", dest, 1024)
    assert got is not None and got.data is None and got.size == 5000
    assert dest.stat().st_ino == (comfy / "big.bin").stat().st_ino


def test_another_filesystem_gets_a_copy(comfy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cross_device(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(local_outputs.os, "link", cross_device)
    dest = tmp_path / "t_big.bin"
    got = fetch_local(comfy, "big.bin", "", dest, 1024)
    assert got is not None and dest.read_bytes() == (comfy / "big.bin").read_bytes()
    assert dest.stat().st_ino != (comfy / "big.bin").stat().st_ino


def test_what_is_not_a_regular_file_is_left_to_view(comfy: Path, tmp_path: Path) -> None:
    os.mkfifo(comfy / "pipe.png")  # opening it must not hang
    assert fetch_local(comfy, "pipe.png", "", tmp_path / "x", 1024) is None
    assert fetch_local(comfy, "sub", "", tmp_path / "x", 1024) is None
    assert fetch_local(comfy, "missing.png", "", tmp_path / "x", 1024) is None
    assert not (tmp_path / "x").exists()
