"""Stage 7: write generated text atomically, so a failed run never leaves a partial file."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path


def write_output(text: str, destination: str | None) -> None:
    """Write to ``destination`` (stdout when None or ``-``) via a temp file renamed into place."""
    if destination in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_atomic(Path(destination), text)


def write_atomic(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            # Keep the permissions the user gave the file; mkstemp creates 0600.
            os.chmod(temp_name, path.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temp_name, 0o666 & ~umask)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
