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
from pathlib import Path
from typing import Any

from workbench.errors import ToolkitError

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


class ToolkitSession:
    """One rknn-toolkit2 worker process. Use as a context manager.

    Args:
        workdir: folder for the log and the toolkit's scratch files (the toolkit writes
            some files into its current directory); a temporary folder by default.
        timeout: seconds any single call may take before the worker is killed.
    """

    def __init__(self, workdir: str | Path | None = None, timeout: float | None = None):
        # The worker writes into its own folder (a new one inside ``workdir`` if given, kept
        # for its log; a temporary one otherwise, removed on close), so no user file is touched.
        self._owns_workdir = workdir is None
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="rknn-wb-", dir=workdir)).resolve()
        self.timeout = timeout
        self.log_path = self.workdir / "toolkit.log"
        scratch = self.workdir / "tmp"
        scratch.mkdir(exist_ok=True)
        read_fd, write_fd = os.pipe()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "workbench.rknn._worker", str(write_fd)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                cwd=self.workdir,
                # The toolkit's own temporary files land in the workdir too, and go with it.
                env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch)},
                text=True,
            )
        os.close(write_fd)
        self._replies = os.fdopen(read_fd, "r")

    def call(self, cmd: str, timeout: float | None = None, **args: Any) -> tuple[dict, str]:
        """Run one worker command; returns its result and the toolkit's log for it.

        Raises:
            ToolkitError: the command failed (with the toolkit's own error lines), the
                worker crashed (with the signal), or it ran past the timeout.
        """
        start = self.log_path.stat().st_size
        try:
            self._proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # the worker died earlier (or was closed)
            raise ToolkitError(self._crash_message(cmd, self._log_since(0))) from None
        line = self._read_reply(cmd, timeout or self.timeout)
        log = self._log_since(start)
        if not line:
            raise ToolkitError(self._crash_message(cmd, log))
        reply = json.loads(line)
        if not reply["ok"]:
            said = "\n".join(toolkit_errors(log)[-8:]) or clean_log(log).strip()[-1500:]
            raise ToolkitError(
                f"rknn-toolkit2 {cmd} failed: {reply['error']}\nThe toolkit said:\n{said}\n"
                f"{board_hint(log)}Full log: {self._keep_log()}"
            )
        return reply["result"], log

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, OSError):
                self._proc.kill()
                self._proc.wait()
        self._replies.close()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ToolkitSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _keep_log(self) -> Path:
        """The log's lasting path: a temporary session folder goes on close, so its log is
        copied to the cache's logs/ folder first."""
        if not self._owns_workdir:
            return self.log_path
        from datetime import datetime

        from workbench.datasets import cache_dir

        # The worker's own pid: parallel sessions (sweeps) never share a log name.
        kept = cache_dir() / "logs" / f"toolkit-{datetime.now():%Y%m%d-%H%M%S}-{self._proc.pid}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.log_path, kept)
        return kept

    def _read_reply(self, cmd: str, timeout: float | None) -> str:
        ready, _, _ = select.select([self._replies], [], [], timeout)
        if not ready:
            self._proc.kill()
            self._proc.wait()
            raise ToolkitError(
                f"rknn-toolkit2 {cmd} took longer than {timeout:.0f} s and was stopped. "
                f"Raise the timeout if the model is large. Log: {self._keep_log()}"
            )
        return self._replies.readline()

    def _log_since(self, start: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")

    def _crash_message(self, cmd: str, log: str) -> str:
        code = self._proc.wait()
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        tail = "\n".join(clean_log(log).strip().splitlines()[-15:])
        return (
            f"rknn-toolkit2 stopped at {cmd}: its worker process {how}. Your session is "
            "unaffected; open a new ToolkitSession to go on. Toolkit crashes are usually "
            "toolkit bugs on one operator: find it with the operator-support check, or cut "
            f"the graph before it with outputs=.\nLast lines of the toolkit log ({self._keep_log()}):\n{tail}"
        )
