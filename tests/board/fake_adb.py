#!/usr/bin/env python3
"""A stand-in for adb, for tests only: replays answers recorded from real boards and from
upstream rknn-toolkit2 issues. The scenario (JSON in $FAKE_ADB_SCENARIO) is a list of
[regex over the joined arguments, exit code, output]; the first match answers. Every call's
argument list is appended to $FAKE_ADB_LOG (JSON lines), so tests can check quoting."""

import json
import os
import re
import sys

args = sys.argv[1:]
if os.environ.get("FAKE_ADB_LOG"):
    with open(os.environ["FAKE_ADB_LOG"], "a") as log:
        log.write(json.dumps(args) + "\n")
with open(os.environ["FAKE_ADB_SCENARIO"]) as f:
    rules = json.load(f)
joined = " ".join(args)
for pattern, code, output in rules:
    if re.search(pattern, joined):
        if output:
            print(output)
        sys.exit(code)
print(f"fake adb: no answer recorded for {joined!r}", file=sys.stderr)
sys.exit(1)
