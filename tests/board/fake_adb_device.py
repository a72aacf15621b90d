"""A fake adb whose device is this PC (a virtual board behind adb), for the contract tests;
(fake_adb.py beside it replays recorded answers, for the doctor).

It stands in for a Rockchip board reached over adb, which cannot exist here. After
``-s SERIAL`` (one known serial, FAKE_ADB_SERIAL, default fake-1): ``push`` and ``pull``
copy one file, ``shell CMD`` runs CMD in sh and returns its exit code, as adb's shell
protocol does. Anything else fails the way adb does: a message on stderr, exit 1.
"""

import os
import shutil
import subprocess
import sys


def main(argv: list[str]) -> int:
    serial = os.environ.get("FAKE_ADB_SERIAL", "fake-1")
    if argv[:1] == ["devices"]:
        print(f"List of devices attached\n{serial}\tdevice")
        return 0
    if argv[:1] != ["-s"] or len(argv) < 3:
        print("adb: usage: adb -s SERIAL push|pull|shell ...", file=sys.stderr)
        return 1
    if argv[1] != serial:
        print(f"adb: device '{argv[1]}' not found", file=sys.stderr)
        return 1
    command, args = argv[2], argv[3:]
    try:
        if command in ("push", "pull") and len(args) == 2:
            shutil.copy(args[0], args[1])
            return 0
        if command == "shell" and len(args) == 1:
            return subprocess.run(["sh", "-c", args[0]]).returncode
    except OSError as err:
        print(f"adb: error: {err}", file=sys.stderr)
        return 1
    print(f"adb: unknown command {command} {args}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
