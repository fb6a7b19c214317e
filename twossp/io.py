"""Small filesystem helpers: writes that never leave a half-written file behind, and the check
that every folder a run will write can be written (before any work)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the permissions a plain ``open`` would give it (``0o666`` less the umask);
    ``mkstemp`` alone would leave it readable by its owner only, which hides run files from
    teammates on a shared results folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def honour_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the permissions a plain ``open`` / ``mkdir`` would
    (less the umask). Writers that go through a private temporary file (safetensors'
    ``model.safetensors`` arrives as ``0o600``) would otherwise hide a saved model from
    teammates on a shared folder.
    """
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


class NotWritableError(PermissionError):
    """A folder a run will write cannot be written (named, with the setting that moves it)."""


def check_writable(folders: list[tuple[str, Path, str]]) -> None:
    """Make sure each folder exists and takes a file, before any work.

    Args:
        folders: ``(what is written there, folder, the setting that moves it)``.

    Raises:
        NotWritableError: for the first folder that cannot be created or written.
    """
    for what, folder, setting in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".twossp-probe.")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            reason = _blocked_by(folder) or exc.strerror or type(exc).__name__
            raise NotWritableError(
                f"folder {str(folder)!r} ({what}) is not writable: {reason}; "
                f"set {setting} to a folder you can write"
            ) from None


def _blocked_by(folder: Path) -> str | None:
    """``<path> is a file`` when a file stands where ``folder`` or one of its parents
    should be (what ``mkdir`` reports as "File exists" or "Not a directory")."""
    for path in (folder, *folder.parents):
        if path.exists():
            return None if path.is_dir() else f"{path} is a file"
    return None
