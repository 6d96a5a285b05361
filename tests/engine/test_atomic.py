"""Atomic writes: a profile, clip or report appears complete, readable like any new file, or not at all."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from calibstudio.engine.atomic import WriteError, atomic_write


def test_a_written_file_gets_the_usual_permissions_not_the_temp_files(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "profile.safetensors", lambda tmp: tmp.write_bytes(b"data"))
    finally:
        os.umask(umask)
    assert path.read_bytes() == b"data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.safetensors"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")

    def full_disk(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match=r"report\.json: No space left on device; free some space"):
        atomic_write(path, full_disk)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
