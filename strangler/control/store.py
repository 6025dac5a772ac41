"""The state directory: small versioned JSON files, written atomically, refused (never reset) when unreadable.

Each file is `{"format": NAME, "version": N, ...}`. A file this proxy cannot read
(not JSON, another format, a version newer than it knows) raises StateRefused;
the caller says what it does instead, and the file stays as it is until an
operator moves it away (or `set_aside` is asked to, by an explicit action).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

VERSION = 1


class StateRefused(Exception):
    """A state file that exists but cannot be trusted."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def atomic_write(path: Path, data: bytes) -> None:
    """Write, fsync, rename over, fsync the folder: a reader sees the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class StateStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / name

    def read(self, name: str, kind: str) -> dict[str, Any] | None:
        """The body of the file `name` (None if there is none); StateRefused if it cannot be trusted."""
        path = self.path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StateRefused(path, f"unreadable ({error.strerror or error})") from None
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError) as error:
            raise StateRefused(path, f"corrupt: not JSON ({error})") from None
        if not isinstance(document, dict) or document.get("format") != kind:
            raise StateRefused(path, f"corrupt: not a {kind} file")
        version = document.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise StateRefused(path, f"corrupt: version {version!r}")
        if version > VERSION:
            raise StateRefused(path, f"written by a newer strangler (state version {version}; this one reads "
                                     f"up to {VERSION})")
        return document

    def write(self, name: str, kind: str, body: dict[str, Any]) -> None:
        document = {"format": kind, "version": VERSION, "written_at": time.time(), **body}
        atomic_write(self.path(name), json.dumps(document, indent=1, sort_keys=True).encode() + b"\n")

    def signature(self, name: str) -> tuple[int, int, int] | None:
        """Changes whenever the file is replaced or rewritten; None when it is gone."""
        try:
            found = os.stat(self.path(name))
        except OSError:
            return None
        return (found.st_ino, found.st_size, found.st_mtime_ns)

    def set_aside(self, name: str) -> Path:
        """Rename a refused file out of the way, keeping its content; the new name is returned."""
        path = self.path(name)
        aside = path.with_name(f"{path.name}.refused-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, aside)
        return aside
