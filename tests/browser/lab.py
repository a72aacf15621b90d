"""Drive a real JupyterLab from a real browser: a Lab server on 127.0.0.1 (the same
command as `make lab`) and Debian's chromium through Playwright. Used by the browser test
and by benchmarks/bench_lab.py."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: Debian's chromium; Playwright never downloads a browser here.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str | None:
    return next((p for p in CHROMIUM_CANDIDATES if os.access(p, os.X_OK)), None)


class Lab:
    """JupyterLab serving ``root`` on 127.0.0.1 with a random token. Context manager.

    Notebook windowing is off (every cell stays in the page, so outputs can be found) and
    the app is exposed as ``window.jupyterapp`` so a test can run its commands.
    """

    def __init__(self, root: Path, settings: Path):
        self.root, self.settings = root, settings
        self.token = secrets.token_hex(16)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.started = time.perf_counter()

    def __enter__(self) -> Lab:
        tracker = self.settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True, exist_ok=True)
        tracker.write_text(json.dumps({"windowingMode": "none"}))
        news = self.settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True, exist_ok=True)
        news.write_text(json.dumps({"fetchNews": "false"}))  # no "Jupyter news?" popup over the page
        env = {
            **os.environ,
            "JUPYTERLAB_SETTINGS_DIR": str(self.settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.settings / "workspaces"),
        }
        self.log = open(self.settings / "lab.log", "w")  # noqa: SIM115 - closed in __exit__
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-browser",
                "--allow-root",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._wait_ready(90)
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def url(self, notebook: str) -> str:
        # ?reset: a fresh workspace, so an earlier page's notebooks are not reopened here
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook}?reset&token={self.token}"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {(self.settings / 'lab.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/api/status?token={self.token}", timeout=2
                ):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(
            f"JupyterLab did not answer within {timeout:.0f} s; see {self.settings / 'lab.log'}"
        )


def copy_notebook(name: str, folder: Path) -> Path:
    """A copy of notebooks/<name> to run (Lab saves outputs into the file it runs)."""
    source = Path(__file__).resolve().parents[2] / "notebooks" / name
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, folder / name))


def open_notebook(page, lab: Lab, notebook: str) -> None:
    """Open ``notebook`` and wait until its kernel is ready."""
    page.goto(lab.url(notebook))
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        timeout=120_000,
    )


def run_all_cells(page) -> None:
    """Lab's "Run All Cells" command (returns when the notebook has been queued)."""
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def wait_until_idle(page, timeout_ms: int) -> None:
    """Every code cell has run and the kernel is idle, or a cell failed (Lab then skips the
    rest, so waiting longer would only hide the traceback)."""
    page.wait_for_function(
        """() => {
            const nb = window.jupyterapp.shell.currentWidget;
            const session = nb && nb.sessionContext && nb.sessionContext.session;
            const kernel = session && session.kernel;
            if (!kernel || !nb.content) return false;  // between states (a kernel restarting)
            const cells = nb.content.widgets.filter(c => c.model.type === 'code');
            const failed = cells.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'));
            return kernel.status === 'idle' && (failed || cells.every(c => c.model.executionCount !== null));
        }""",
        timeout=timeout_ms,
        polling=500,
    )


def notebook_errors(page) -> list[str]:
    """Tracebacks (error outputs) in the notebook, as text."""
    return page.evaluate(
        """() => window.jupyterapp.shell.currentWidget.content.widgets
            .flatMap(c => c.model.type === 'code' ? c.model.outputs.toJSON() : [])
            .filter(o => o.output_type === 'error')
            .map(o => o.ename + ': ' + o.evalue)"""
    )
