"""The child process that runs rknn-toolkit2 (started by workbench.rknn.session).

Requests arrive as JSON lines on stdin; replies go as JSON lines to the file descriptor
given as argv[1]. stdout/stderr belong to the toolkit's log. If the toolkit crashes this
process dies alone and the parent reports it; the Jupyter kernel lives on.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


class _State:
    rknn = None


def _check(ret, what: str) -> None:
    if ret != 0:
        raise RuntimeError(f"{what} returned {ret}")


def build(
    state: _State,
    model_path: str,
    config: dict,
    dataset: str | None,
    do_quantization: bool,
    rknn_path: str | None = None,
) -> dict:
    from rknn.api import RKNN

    if state.rknn is not None:
        state.rknn.release()
    state.rknn = RKNN(verbose=True)
    _check(state.rknn.config(**config), "rknn.config()")
    _check(state.rknn.load_onnx(model=model_path), "rknn.load_onnx()")
    _check(state.rknn.build(do_quantization=do_quantization, dataset=dataset), "rknn.build()")
    if rknn_path:
        _check(state.rknn.export_rknn(rknn_path), "rknn.export_rknn()")
    return {}


def accuracy_analysis(state: _State, inputs: list[str], output_dir: str) -> dict:
    if state.rknn is None:
        raise RuntimeError("accuracy_analysis() before build()")
    _check(state.rknn.accuracy_analysis(inputs=inputs, output_dir=output_dir), "rknn.accuracy_analysis()")
    return {"output_dir": output_dir}


HANDLERS = {"build": build, "accuracy_analysis": accuracy_analysis}


def main() -> None:
    reply = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    state = _State()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = HANDLERS[request["cmd"]](state, **request["args"])
            answer = {"ok": True, "result": result}
        except BaseException as err:  # the toolkit raises bare Exceptions and SystemExit
            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        sys.stdout.flush()
        sys.stderr.flush()
        reply.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
