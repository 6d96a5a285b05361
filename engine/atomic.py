"""Atomic file writes (stdlib only): a file appears complete or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

_UMASK = os.umask(0)  # read once, at import (setting it is process-wide): new files get 0o666 minus it
os.umask(_UMASK)


class WriteError(ValueError):
    """A file could not be written; the message names the file, the reason and what to do."""


def writable_destination(path: str | os.PathLike[str]) -> Path:
    """``path`` if its folder exists: a job checks its outputs with this before its work, not after."""
    path = Path(path)
    if not path.parent.is_dir():
        raise WriteError(f"cannot write {path}: folder {path.parent} does not exist; create it first")
    return path


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``path``, fsync it and rename it into place.

    The temporary name keeps ``path``'s extension (writers such as ffmpeg pick the format by it).
    On any failure (full disk, permission, interrupt) the temporary file is removed and an existing
    ``path`` is left untouched.
    """
    path = writable_destination(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0o600 would hide a profile or clip from other users
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"could not write {path}: {error.strerror or error}; "
                         f"free some space or choose another folder") from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
