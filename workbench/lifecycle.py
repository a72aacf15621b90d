"""Child processes die with the workbench, and temporary folders go with it.

Two mechanisms, because either alone has a gap:

- ``PR_SET_PDEATHSIG`` (Linux): the kernel sends the child SIGKILL when its parent dies,
  even by SIGKILL. The kernel ties it to the parent *thread* that started the child, so it is
  set only for children started from the main thread (which lives as long as the process).
- A watchdog pipe: the parent keeps the write end open for its whole life; the child watches
  the read end and exits on end-of-file, which the kernel delivers when the parent dies for
  any reason (any thread, any platform).

Temporary folders are removed by ``finally`` blocks and, for an ordinary exit that skipped
them, at interpreter exit (:func:`remove_at_exit`). A SIGKILLed process runs neither, so
folders holding secrets are removed by a helper that outlives it (see board/virtual.py).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that makes the child receive ``sig`` when
    this process dies; None where it cannot work (not Linux, or not the main thread: the
    signal would fire when this thread ends). Pair it with a watchdog pipe."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc = _libc()
    if libc is None:
        return None
    parent = os.getpid()
    prctl = libc.prctl  # looked up here: the child between fork and exec must not load anything

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux), so it can kill them
    all; False where not available."""
    libc = _libc() if sys.platform.startswith("linux") else None
    return bool(libc) and libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def watchdog_pipe() -> tuple[int, int]:
    """(read end for the child, write end the parent keeps open until the child should stop).

    Both ends are non-inheritable: pass the read end with ``pass_fds``, so other children
    never hold the write end open."""
    return os.pipe()


def exit_when_parent_dies(fd: int, cleanup: Callable[[], None] | None = None) -> threading.Thread:
    """In a child: a daemon thread that runs ``cleanup`` and exits the process when the
    watchdog pipe ``fd`` reaches end-of-file (the parent died or let go)."""

    def watch() -> None:
        while os.read(fd, 1024):
            pass
        try:
            if cleanup:
                cleanup()
        finally:
            os._exit(1)

    thread = threading.Thread(target=watch, name="parent-watchdog", daemon=True)
    thread.start()
    return thread


_TO_REMOVE: set[Path] = set()


def remove_at_exit(path: str | Path) -> Path:
    """Remove ``path`` (a temporary folder) at interpreter exit unless :func:`forget`-ten
    first: the backstop for an exit that skipped the owner's ``finally``."""
    path = Path(path)
    _TO_REMOVE.add(path)
    return path


def forget(path: str | Path) -> None:
    _TO_REMOVE.discard(Path(path))


def remove_tree(folder: str | Path) -> None:
    """Delete a folder made by :func:`temp_folder`, its owner mark last: a deletion cut short
    (the process killed meanwhile) leaves a folder the next :func:`temp_folder` can still
    recognise as stale and sweep."""
    folder = Path(folder)
    try:
        entries = [e for e in folder.iterdir() if e.name != _OWNER]
    except OSError:
        return
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


@atexit.register
def _remove_leftovers() -> None:
    for path in list(_TO_REMOVE):
        remove_tree(path)
    _TO_REMOVE.clear()


_OWNER = ".owner-pid"


def temp_folder(prefix: str) -> Path:
    """A new private (0700) temporary folder, marked with this process's pid and removed at
    interpreter exit as a backstop. Creating one first removes the ``prefix`` folders of
    processes that died without cleaning up (SIGKILL); folders of live or foreign
    processes are left alone."""
    root, me = Path(tempfile.gettempdir()), _owner_mark(os.getpid())
    for stale in root.glob(f"{prefix}*"):
        try:
            pid, space = (stale / _OWNER).read_text().split(maxsplit=1)
            if space != me.split(maxsplit=1)[1]:  # another container's pids: not ours to judge
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (OSError, ValueError):  # no owner mark, not ours to read, or alive
            continue
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    (folder / _OWNER).write_text(me)
    return remove_at_exit(folder)


def _owner_mark(pid: int) -> str:
    """``pid`` and the pid namespace it is valid in (a /tmp shared between containers)."""
    try:
        space = os.readlink("/proc/self/ns/pid")
    except OSError:
        space = "-"
    return f"{pid} {space}"
