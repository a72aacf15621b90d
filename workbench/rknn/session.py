"""ToolkitSession: rknn-toolkit2 in a child process, driven by small JSON requests.

The toolkit segfaults on some models (upstream issues #440, #475) and prints its tables
on stdout. Running it in a child keeps the caller's process (a Jupyter kernel) alive
whatever happens, and gives every call its own slice of the toolkit's log.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from workbench.datasets import cache_dir
from workbench.errors import ToolkitError
from workbench.lifecycle import die_with_parent, forget, remove_tree, temp_folder, watchdog_pipe

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def clean_log(text: str) -> str:
    """Toolkit log text without colour codes or progress-bar carriage returns."""
    text = _ANSI.sub("", text)
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines())


_BOARD_TROUBLE = ("ERROR_PIPE", "rknn_server", "Connect to Device", "device offline", "not found", "adb")


def board_hint(log: str) -> str:
    """A pointer to the board doctor when the toolkit's error is about the board link."""
    errors = " ".join(toolkit_errors(log))
    if any(word in errors for word in _BOARD_TROUBLE):
        return "This is the board link (adb / rknn_server): run `rknn-workbench board doctor` for the fix.\n"
    return ""


def toolkit_errors(log: str) -> list[str]:
    """The toolkit's own error lines ("E build: ...") from a log slice."""
    return [line for line in clean_log(log).splitlines() if line.startswith("E ")]


DEFAULT_TIMEOUT = 600.0  #: seconds one toolkit call may take unless the caller or the user says otherwise
TIMEOUT_ENV = "RKNN_WORKBENCH_TIMEOUT"


def call_timeout(requested: float | None = None) -> float:
    """Seconds one toolkit call may take: ``$RKNN_WORKBENCH_TIMEOUT`` if set (the user's knob
    wins, so a large model can always be given more time), else ``requested``, else 600.

    Raises:
        ToolkitError: the variable is set but is not a positive number of seconds.
    """
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0 or value == float("inf"):
            raise ToolkitError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds: set it to e.g. 1800.")
        return value
    return float(requested) if requested else DEFAULT_TIMEOUT


_SESSIONS: weakref.WeakSet[ToolkitSession] = weakref.WeakSet()
_CANCELLED: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def cancel_sessions(threads: Iterable[threading.Thread]) -> None:
    """Kill the workers of the sessions ``threads`` started and refuse new sessions in
    them (KeyboardInterrupt): how an interrupted sweep stops its worker threads at once
    instead of letting them finish their batches."""
    threads = set(threads)
    _CANCELLED.update(threads)
    for session in list(_SESSIONS):
        if session._thread in threads:
            session.kill()


class ToolkitSession:
    """One rknn-toolkit2 worker process. Use as a context manager.

    The worker dies with this process (see workbench.lifecycle): it runs in its own session
    (a Ctrl-C in the terminal reaches only the caller, which then stops it) and is killed by
    the kernel if the caller dies.

    Args:
        workdir: folder for the log and the toolkit's scratch files (the toolkit writes
            some files into its current directory); a temporary folder by default.
        timeout: seconds any single call may take before the worker is killed (default
            600; ``$RKNN_WORKBENCH_TIMEOUT`` overrides every value, see :func:`call_timeout`).
    """

    def __init__(self, workdir: str | Path | None = None, timeout: float | None = None):
        # The worker writes into its own folder (a new one inside ``workdir`` if given, kept
        # for its log; a temporary one otherwise, removed on close), so no user file is touched.
        self._thread = threading.current_thread()
        if self._thread in _CANCELLED:
            raise KeyboardInterrupt("this sweep was interrupted: no new toolkit worker")
        self._owns_workdir = workdir is None
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            self.workdir = Path(tempfile.mkdtemp(prefix="rknn-wb-", dir=workdir)).resolve()
        else:
            self.workdir = temp_folder("rknn-wb-").resolve()
        self.timeout = timeout
        self.log_path = self.workdir / "toolkit.log"
        scratch = self.workdir / "tmp"
        scratch.mkdir(exist_ok=True)
        read_fd, write_fd = os.pipe()
        watch_read, self._watch = watchdog_pipe()
        try:
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "workbench.rknn._worker", str(write_fd), str(watch_read)]
                    + ([str(self.workdir)] if self._owns_workdir else []),
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(write_fd, watch_read),
                    cwd=self.workdir,
                    # The toolkit's own temporary files land in the workdir too, and go with it.
                    env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch)},
                    text=True,
                    preexec_fn=die_with_parent(),
                    start_new_session=True,  # Ctrl-C goes to the caller, which decides
                )
        except BaseException:
            os.close(read_fd)
            os.close(self._watch)
            self._remove_workdir()
            raise
        finally:
            os.close(write_fd)
            os.close(watch_read)
        self._replies = os.fdopen(read_fd, "r")
        _SESSIONS.add(self)

    def call(self, cmd: str, timeout: float | None = None, **args: Any) -> tuple[dict, str]:
        """Run one worker command; returns its result and the toolkit's log for it.

        Raises:
            ToolkitError: ``kind`` "toolkit" (the command failed; the toolkit's own error
                lines quoted), "crash" (the worker died; with the signal) or "timeout" (it
                ran past the limit and was killed); ``log_path`` is the kept log.
        """
        start = self.log_path.stat().st_size
        try:
            self._proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # the worker died earlier (or was closed)
            raise self._crash(cmd, self._log_since(0)) from None
        line = self._read_reply(cmd, call_timeout(timeout or self.timeout))
        log = self._log_since(start)
        if not line:
            raise self._crash(cmd, log)
        reply = json.loads(line)
        if not reply["ok"]:
            said = "\n".join(toolkit_errors(log)[-8:]) or clean_log(log).strip()[-1500:]
            kept = self._keep_log()
            raise ToolkitError(
                f"rknn-toolkit2 {cmd} failed: {reply['error']}\nThe toolkit said:\n{said}\n"
                f"{board_hint(log)}Full log: {kept}",
                kind="toolkit",
                log_path=kept,
            )
        return reply["result"], log

    def kill(self) -> None:
        """Stop the worker now (a call in progress in another thread fails as a crash)."""
        if self._proc.poll() is None:
            self._proc.kill()

    def close(self) -> None:
        """Stop the worker and remove the temporary folder (idempotent).

        Safe against Ctrl-C: an interrupt while waiting for the worker to finish kills it,
        the folder is removed all the same, then the interrupt goes on."""
        try:
            if self._proc.poll() is None:
                try:
                    self._proc.stdin.close()
                    self._proc.wait(timeout=30)
                except (subprocess.TimeoutExpired, OSError):
                    self._proc.kill()
                except BaseException:  # Ctrl-C while waiting: do not wait any longer
                    self._proc.kill()
                    raise
        finally:
            try:
                if self._proc.poll() is None:
                    self._proc.kill()
                self._proc.wait()
            finally:
                self._replies.close()
                if self._watch is not None:
                    os.close(self._watch)
                    self._watch = None
                self._remove_workdir()

    def _remove_workdir(self) -> None:
        if self._owns_workdir:
            remove_tree(self.workdir)
            forget(self.workdir)

    def __enter__(self) -> ToolkitSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _keep_log(self) -> Path:
        """The log's lasting path: a temporary session folder goes on close, so its log is
        copied to the cache's logs/ folder first."""
        if not self._owns_workdir:
            return self.log_path

        # The worker's own pid: parallel sessions (sweeps) never share a log name.
        kept = cache_dir() / "logs" / f"toolkit-{datetime.now():%Y%m%d-%H%M%S}-{self._proc.pid}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.log_path, kept)
        return kept

    def _read_reply(self, cmd: str, timeout: float) -> str:
        ready, _, _ = select.select([self._replies], [], [], timeout)
        if not ready:
            self._proc.kill()
            self._proc.wait()
            kept = self._keep_log()
            raise ToolkitError(
                f"rknn-toolkit2 {cmd} took longer than {timeout:g} s and was stopped. If the model "
                f"is just large, give it more time: set {TIMEOUT_ENV}=SECONDS (or pass timeout=). "
                f"Log: {kept}",
                kind="timeout",
                log_path=kept,
            )
        return self._replies.readline()

    def _log_since(self, start: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")

    def _crash(self, cmd: str, log: str) -> ToolkitError:
        code = self._proc.wait()
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        tail = "\n".join(clean_log(log).strip().splitlines()[-15:])
        kept = self._keep_log()
        return ToolkitError(
            f"rknn-toolkit2 stopped at {cmd}: its worker process {how}. Your session is "
            "unaffected; open a new ToolkitSession to go on. Toolkit crashes are usually "
            "toolkit bugs on one operator: find it with the operator-support check, or cut "
            f"the graph before it with outputs=.\nLast lines of the toolkit log ({kept}):\n{tail}",
            kind="crash",
            log_path=kept,
            returncode=code,
        )
