"""The child process that runs rknn-toolkit2 (started by workbench.rknn.session).

Requests arrive as JSON lines on stdin; replies go as JSON lines to the file descriptor
given as argv[1]. stdout/stderr belong to the toolkit's log. If the toolkit crashes this
process dies alone and the parent reports it; the Jupyter kernel lives on.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import threading
import traceback


class _State:
    rknn = None
    runtime_ready = False


def _check(ret, what: str) -> None:
    if ret != 0:
        raise RuntimeError(f"{what} returned {ret}")


def _sweep_debug_models(stop: threading.Event) -> None:
    """Delete the check*.onnx graph copies a verbose build writes into the current folder
    (one model-sized file per optimisation pass, never read back): they would multiply
    the disk a build needs."""
    while not stop.wait(0.05):
        for path in glob.glob("check[0-9]*_*.onnx"):
            try:
                os.remove(path)
            except OSError:
                pass


def build(
    state: _State,
    model_path: str,
    config: dict,
    dataset: str | None,
    do_quantization: bool,
    rknn_path: str | None = None,
    verbose: bool = True,
    float_layers: list[str] | None = None,
    auto_hybrid: bool = False,
) -> dict:
    """The session's model: a plain build, ``build(auto_hybrid=True)``, or (with
    ``float_layers``) hybrid quantization step1 + step2 with those tensors in float16."""
    from rknn.api import RKNN

    if float_layers:
        files = hybrid_step1(state, model_path, config, dataset)
        hybrid_step2(state, **files, float_layers=float_layers, verbose=verbose)
    else:
        if state.rknn is not None:
            state.rknn.release()
        state.rknn = RKNN(verbose=verbose)
        state.runtime_ready = False
        _check(state.rknn.config(**config), "rknn.config()")
        _check(state.rknn.load_onnx(model=model_path), "rknn.load_onnx()")
        _check(
            state.rknn.build(do_quantization=do_quantization, dataset=dataset, auto_hybrid=auto_hybrid),
            "rknn.build()",
        )
    if rknn_path:
        _check(state.rknn.export_rknn(rknn_path), "rknn.export_rknn()")
    return {}


def accuracy_analysis(
    state: _State, inputs: list[str], output_dir: str, target: str | None = None, device_id: str | None = None
) -> dict:
    """Simulator snapshot; with ``target`` also the board's runtime dumps (pulled over adb)."""
    if state.rknn is None:
        raise RuntimeError("accuracy_analysis() before build()")
    _check(
        state.rknn.accuracy_analysis(
            inputs=inputs, output_dir=output_dir, target=target, device_id=device_id
        ),
        "rknn.accuracy_analysis()",
    )
    return {"output_dir": output_dir}


def init_runtime(
    state: _State,
    target: str | None = None,
    device_id: str | None = None,
    perf_debug: bool = False,
    eval_mem: bool = False,
) -> dict:
    """Simulator (no target) or the board through adb + rknn_server (target, device_id)."""
    if state.rknn is None:
        raise RuntimeError("init_runtime() before build()")
    _check(
        state.rknn.init_runtime(target=target, device_id=device_id, perf_debug=perf_debug, eval_mem=eval_mem),
        "rknn.init_runtime()",
    )
    state.runtime_ready = True
    return {}


def board_report(state: _State, what: str) -> dict:
    """get_sdk_version / eval_perf / eval_memory: they print their tables into the log."""
    result = getattr(state.rknn, what)()
    return {"value": result if isinstance(result, str | int | float) else None}


def list_devices(state: _State) -> dict:
    from rknn.api import RKNN

    adb, ntb = RKNN(verbose=False).list_devices()
    return {"adb": list(adb or []), "ntb": list(ntb or [])}


def inference(state: _State, inputs: list[str], output_path: str) -> dict:
    """Run the built model (on the simulator unless init_runtime chose a board); inputs are
    .npy files in the ONNX layout."""
    import numpy as np

    if state.rknn is None:
        raise RuntimeError("inference() before build()")
    if not state.runtime_ready:
        init_runtime(state)
    arrays = [np.load(p) for p in inputs]
    formats = ["nchw" if a.ndim == 4 else None for a in arrays]
    outputs = state.rknn.inference(inputs=arrays, data_format=formats)
    if outputs is None:
        raise RuntimeError("rknn.inference() returned None")
    np.savez(output_path, *outputs)
    return {"count": len(outputs)}


def hybrid_step1(state: _State, model_path: str, config: dict, dataset: str) -> dict:
    """hybrid_quantization_step1: writes <model>.model/.data/.quantization.cfg into the
    current folder (the session's own)."""
    from rknn.api import RKNN

    rknn = RKNN(verbose=False)
    try:
        _check(rknn.config(**config), "rknn.config()")
        _check(rknn.load_onnx(model=model_path), "rknn.load_onnx()")
        _check(rknn.hybrid_quantization_step1(dataset=dataset), "rknn.hybrid_quantization_step1()")
    finally:
        rknn.release()
    stem = os.path.splitext(os.path.basename(model_path))[0]
    files = {k: os.path.abspath(f"{stem}.{k}") for k in ("model", "data")}
    files["cfg"] = os.path.abspath(f"{stem}.quantization.cfg")
    return files


def hybrid_step2(
    state: _State,
    model: str,
    data: str,
    cfg: str,
    float_layers: list[str],
    verbose: bool = False,
    rknn_path: str | None = None,
) -> dict:
    """hybrid_quantization_step2 with ``float_layers`` kept in float16; the result is the
    session's model for inference() (exported to ``rknn_path`` when given). Verbose prints
    the compiled layer table (cycles)."""
    import yaml
    from rknn.api import RKNN

    with open(cfg) as f:
        settings = yaml.safe_load(f)
    settings["custom_quantize_layers"] = {name: "float16" for name in float_layers}
    variant = f"{os.path.splitext(cfg)[0]}.variant.cfg"
    with open(variant, "w") as f:
        yaml.safe_dump(settings, f, sort_keys=False)
    if state.rknn is not None:
        state.rknn.release()
    state.rknn = RKNN(verbose=verbose)
    state.runtime_ready = False
    _check(
        state.rknn.hybrid_quantization_step2(
            model_input=model, data_input=data, model_quantization_cfg=variant
        ),
        "rknn.hybrid_quantization_step2()",
    )
    if rknn_path:
        _check(state.rknn.export_rknn(rknn_path), "rknn.export_rknn()")
    return {}


HANDLERS = {
    "build": build,
    "accuracy_analysis": accuracy_analysis,
    "inference": inference,
    "init_runtime": init_runtime,
    "board_report": board_report,
    "list_devices": list_devices,
    "hybrid_step1": hybrid_step1,
    "hybrid_step2": hybrid_step2,
}


def _watch_parent(argv: list[str]) -> None:
    """Exit when the parent dies (its watchdog pipe closes), removing the session's own
    temporary folder (argv[3], when the session owns one): the backstop for a parent that
    was killed before its close() ran. On Linux the kernel usually kills us first
    (PR_SET_PDEATHSIG); the parent's next session then removes the folder."""
    if len(argv) < 3:
        return
    from workbench.lifecycle import exit_when_parent_dies, remove_tree

    folder = argv[3] if len(argv) > 3 else None
    cleanup = (lambda: remove_tree(folder)) if folder else None
    exit_when_parent_dies(int(argv[2]), cleanup)


def main() -> None:
    reply = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    _watch_parent(sys.argv)
    state = _State()
    stop = threading.Event()
    threading.Thread(target=_sweep_debug_models, args=(stop,), daemon=True).start()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = HANDLERS[request["cmd"]](state, **request["args"])
            answer = {"ok": True, "result": result}
        except KeyboardInterrupt:
            # An interrupt is not the toolkit's answer: never reply it as a failure (a probe
            # or a sweep would store it as a result). Die; the parent reports a crash.
            raise
        except BaseException as err:  # the toolkit raises bare Exceptions and SystemExit
            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        sys.stdout.flush()
        sys.stderr.flush()
        reply.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
