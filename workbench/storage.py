"""Atomic writes, the one way the workbench saves files.

A file, or a set of files in a folder, is either its old or its new version, never half of
one, whatever stops the process (an exception, Ctrl-C, SIGKILL, a full disk). Writers of the
same folder take turns (a lock file next to it), so concurrent runs never fail or corrupt
each other. Files in the folder that the workbench did not write are never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a unique temporary file in the same folder and a
    rename: readers see the old content or the new, never a part. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def folder_lock(folder: str | Path, timeout: float = -1) -> FileLock:
    """The lock of ``folder``: a hidden lock file next to it (the folder itself may not exist
    yet, or be replaced). Hold it to read or write the folder's workbench files."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(folder.parent / f".{folder.name}.lock", timeout=timeout)


@contextmanager
def staged_files(folder: str | Path) -> Iterator[Path]:
    """Write files into the yielded staging folder; on a normal exit they replace their
    namesakes in ``folder`` all together, under the folder's lock.

    Other files and subfolders of ``folder`` are kept. If the process stops before the
    commit, nothing changes; if it stops during the commit, the next :func:`recover` (any
    save or load of the folder) finishes it. On an exception the staged files are dropped.
    """
    folder = Path(folder)
    with folder_lock(folder):
        recover(folder)
        stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.stage-", dir=folder.parent))
        try:
            yield stage
            folder.mkdir(exist_ok=True)
            journal = _journal(folder)
            os.replace(stage, journal)  # the commit point: from here on, roll forward
            _roll_forward(journal, folder)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def recover(folder: str | Path) -> None:
    """Finish or undo what an interrupted save of ``folder`` left (call under its lock):
    a committed set of files is put in place, a staging folder that was never committed is
    removed, and a run moved aside by the earlier whole-folder swap is put back."""
    folder = Path(folder)
    journal = _journal(folder)
    if journal.is_dir():
        folder.mkdir(exist_ok=True)
        _roll_forward(journal, folder)
    for stale in folder.parent.glob(f".{folder.name}.stage-*"):
        shutil.rmtree(stale, ignore_errors=True)
    old = folder.with_name(f".{folder.name}.old")
    if old.is_dir():
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, folder)


def remove_folder(folder: str | Path) -> None:
    """Delete ``folder`` under its lock (a cache entry found corrupt)."""
    folder = Path(folder)
    with folder_lock(folder):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(_journal(folder), ignore_errors=True)


def _journal(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.commit")


def _roll_forward(journal: Path, folder: Path) -> None:
    for item in sorted(journal.iterdir()):
        target = folder / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    journal.rmdir()
