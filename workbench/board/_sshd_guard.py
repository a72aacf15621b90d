"""The virtual board's sshd, inside a guard that cleans up whatever happens to the workbench.

    python -m workbench.board._sshd_guard FOLDER OWNED -- sshd -D ...

Started by VirtualBoard with a watchdog pipe as stdin. The guard adopts every process sshd
starts (PR_SET_CHILD_SUBREAPER: the sessions sshd detaches and the board runner they run),
and when the pipe closes (VirtualBoard.stop(), or the workbench died, even by SIGKILL) or
sshd exits, it kills all of them, deletes the private keys from FOLDER (the whole folder
when OWNED is 1) and exits. The keys never outlive the board.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from workbench.lifecycle import become_subreaper, die_with_parent, remove_tree

KEYS = ("host_key", "host_key.pub", "client_key", "client_key.pub")


def descendants(root: int) -> list[int]:
    """Pids of every process below ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def kill_all(sshd: subprocess.Popen) -> None:
    """SIGTERM sshd, then SIGKILL everything below the guard until nothing is left."""
    if sshd.poll() is None:
        sshd.terminate()
        try:
            sshd.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
    for _ in range(50):
        pids = descendants(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap()
        time.sleep(0.05)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def remove_secrets(folder: Path, owned: bool) -> None:
    """The keys first, then (an owned folder) everything else."""
    for name in KEYS:
        (folder / name).unlink(missing_ok=True)
    if owned:
        remove_tree(folder)


def main(argv: list[str]) -> int:
    folder, owned, command = Path(argv[1]), argv[2] == "1", argv[4:]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workbench decides when the board stops
    become_subreaper()
    sshd = subprocess.Popen(command, preexec_fn=die_with_parent(signal.SIGKILL))
    try:
        while not stop and sshd.poll() is None:
            ready, _, _ = select.select([sys.stdin.fileno()], [], [], 0.2)
            if ready and not os.read(sys.stdin.fileno(), 1024):  # end of file: the workbench let go
                break
            _reap()  # adopted orphans that ended
    finally:
        kill_all(sshd)
        remove_secrets(folder, owned)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
