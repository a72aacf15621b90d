"""The HTML report: one self-contained file (plotly inlined) that opens offline."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from workbench.compare.metrics import SQNR_OK_DB
from workbench.compare.result import Divergence
from workbench.fix.before_after import variants_table
from workbench.storage import atomic_write
from workbench.viz.fix_plots import pareto_figure, sensitivity_figure, variants_figure
from workbench.viz.model_explorer import standalone_command
from workbench.viz.plots import gap_figure, heatmap_figure, per_layer_figure
from workbench.viz.task_plots import answers_figure, flip_layers_figure

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3}code,pre{background:#f6f6f6;padding:2px 4px}
"""


def write_report(
    result: Divergence,
    path: str | Path,
    worst: int = 10,
    *,
    variants: Mapping[str, Divergence] | None = None,
    search=None,
    answers=None,
    flip_layers=None,
    next_step: str | None = None,
) -> Path:
    """Write the report of a divergence run to ``path`` (atomically) and return the path.

    The report leads with the answers when given: ``answers`` (a ``task.TaskResult``: the
    verdict, the samples whose answer flips), ``flip_layers`` (``task.explain.flip_layers``:
    the layers worse where the answer changes) and ``next_step`` (a measured suggestion).
    ``variants`` (label -> run, e.g. from ``fix.before_after.compare_variants``) adds the
    before/after section; ``search`` (a ``fix.search.SearchResult``) adds the sensitivity
    ranking, the accuracy-vs-cost plot and the config found."""
    path = Path(path)
    meta = result.meta
    model = meta.get("model", {})
    figures = [
        per_layer_figure(result, "sqnr_db"),
        per_layer_figure(result, "cosine"),
        heatmap_figure(result),
    ]
    on_board = result.table[result.table.backend.astype(str).str.startswith("board:")]
    if (on_board.status == "compared").any():
        figures.insert(1, gap_figure(result, "simulator", on_board.backend.iloc[0]))
    first_js = answers is None  # the answers section carries plotly.js when present
    plots = "".join(
        fig.to_html(full_html=False, include_plotlyjs=first_js and i == 0) for i, fig in enumerate(figures)
    )
    fix_section = _fix_section(result, variants, search)
    verdicts = result.first_divergence()
    worst_table = verdicts.nsmallest(worst, "sqnr_db_mean")[
        ["layer", "op_type", "verdict", "share", "sqnr_db_mean", "sqnr_db_worst", "cosine_mean"]
    ].to_html(index=False, float_format=lambda v: f"{v:.4f}")
    origins = result.origins(3)
    origin_text = (
        f"Error is made mostly at ({(verdicts.verdict == 'origin').sum()} origins; top 3, share of error): "
        + ", ".join(html.escape(f"{r.layer} ({r.op_type}, {r.share:.0%})") for r in origins.itertuples())
        if len(origins)
        else f"No layer falls below {SQNR_OK_DB:g} dB: no divergence origin."
    )
    counts = result.table.drop_duplicates("layer").status.value_counts().to_dict()
    name = html.escape(model.get("name", ""))
    version = html.escape(str(meta.get("toolkit_version")))
    model_facts = {k: model.get(k) for k in ("path", "opset", "nodes", "parameters", "inputs", "outputs")}
    body = f"""<!doctype html><html><head><meta charset="utf-8">
<title>rknn-workbench report: {name}</title><style>{_STYLE}</style></head>
<body><h1>Quantization report: {name}</h1>{_partial_banner(meta)}
{_answers_section(answers, flip_layers, next_step)}
<h2>Per-layer divergence</h2>{_board_line(meta)}
<p>Float ONNX (onnxruntime) vs quantized RKNN on the rknn-toolkit2 {version} simulator
({html.escape(str(meta.get("mode", "snapshot")))} mode),
{len(meta.get("samples", []))} sample(s), created {html.escape(str(meta.get("created")))}.
Layers compared: {counts.get("compared", 0)}; fused into a neighbour (no RKNN tensor):
{counts.get("fused", 0)}; constants folded away: {counts.get("constant", 0)}; compiled layers with no
ONNX tensor: {counts.get("unmapped", 0)}; unaligned (layout unknown): {counts.get("unaligned", 0)}.</p>
<h2>Worst layers (lowest mean SQNR)</h2><p>{origin_text} ("origin": the layer makes
the error itself; "inherited": its inputs were already bad.)</p>{worst_table}
<h2>Along the graph</h2>{plots}{fix_section}
{_graph_section(path.parent, model.get("path"))}
<h2>Model</h2><pre>{html.escape(json.dumps(model_facts, indent=1))}</pre>
<h2>Operator support</h2>{_support_section(meta)}
<h2>Conversion settings</h2><pre>{html.escape(json.dumps(meta.get("config"), indent=1))}</pre>
<h2>Calibration</h2><pre>{html.escape(json.dumps(meta.get("calibration"), indent=1))}</pre>
</body></html>"""
    return atomic_write(path, body)


def _answers_section(answers, flip_layers, next_step: str | None) -> str:
    """Verdict on the answers, the samples that flip, the layers behind them, the next step."""
    if answers is None:
        return (
            "<p><i>No task verdict in this run: judge the answers with <code>rknn-workbench "
            "evaluate MODEL</code> (per-layer numbers alone do not say whether answers change).</i></p>"
        )

    parts = [
        "<h2>Answers: did quantization change them?</h2>",
        f"<p style='font-size:1.2em'><b>{html.escape(answers.verdict())}</b></p>",
        answers_figure(answers).to_html(full_html=False, include_plotlyjs=True),
        answers.summary().to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""),
    ]
    metrics = answers.meta.get("dataset_metrics") or {}
    if metrics:
        table = pd.DataFrame(metrics).T.rename_axis("backend").reset_index()
        parts += ["<p>Dataset metrics:</p>", table.to_html(index=False, float_format=lambda v: f"{v:.4f}")]
    for backend in answers.backends:
        flips = answers.flips(backend)
        if len(flips):
            flips = flips.assign(path=flips.path.map(lambda p: Path(p).name)).drop(columns=["sample"])
            parts += [
                f"<h3>Answers that differ from float on {html.escape(backend)}</h3>",
                flips.head(20).to_html(index=False),
            ]
    if flip_layers is not None and len(flip_layers):
        parts += [
            "<h2>Where: layers worse on the flipped samples</h2>",
            flip_layers_figure(flip_layers).to_html(full_html=False, include_plotlyjs=False),
        ]
    next_step = next_step or answers.meta.get("next_step")
    if next_step:
        parts.append(f"<h2>Next step</h2><p>{html.escape(next_step)}</p>")
    return "".join(parts)


def _graph_section(folder: Path, model_path: str | None) -> str:
    """How to open the run's graph overlays (node data beside the report) in Model Explorer."""

    overlays = sorted(folder.glob("node_data_*.json"))
    prepared = folder / "model.onnx"
    model = prepared if prepared.is_file() else model_path
    if not overlays or not model:
        return ""
    order = [folder / f"node_data_{k}.json" for k in ("sqnr", "verdict", "support")]
    command = standalone_command(model, [p for p in order if p.is_file()] or overlays)
    return (
        "<h2>Graph view</h2><p>The per-node SQNR, verdict and operator-support overlays of this run "
        "open in Model Explorer (in a notebook: <code>workbench.viz.model_explorer.explorer_view</code>):"
        f"</p><pre>{html.escape(command)}</pre>"
    )


def _fix_section(result: Divergence, variants, search) -> str:
    """Before/after and search results (plotly.js is already on the page)."""

    parts = []
    if search is not None:
        swept = "gain_db" in search.ranking and search.ranking.layer.notna().any()
        parts += [
            f"<h2>Mixed-precision search</h2><p>{html.escape(search.summary())}</p>",
            "<p>Float16 layers: <code>" + html.escape(", ".join(search.layers) or "(none)") + "</code></p>",
            sensitivity_figure(search.ranking).to_html(full_html=False, include_plotlyjs=False)
            if swept
            else "<p>No sensitivity sweep was needed: the int8 model meets the target.</p>",
            pareto_figure(search.trail, target=search.target.get("sqnr_db")).to_html(
                full_html=False, include_plotlyjs=False
            ),
        ]
    if variants:
        outputs = list(result.meta.get("model", {}).get("outputs", {}))
        table = variants_table(variants, outputs).to_html(index=False, float_format=lambda v: f"{v:.4f}")
        parts += [
            "<h2>Before/after: quantization variants</h2>",
            table,
            variants_figure(variants).to_html(full_html=False, include_plotlyjs=False),
        ]
    return "".join(parts)


def _support_section(meta: dict) -> str:
    support = meta.get("support")
    if not support:
        return "<p>Not recorded in this run: see <code>rknn-workbench check MODEL</code>.</p>"
    counts = ", ".join(f"{html.escape(str(k))}: {v}" for k, v in support["counts"].items())
    text = f"<p>Static check for {html.escape(support['platform'])}: {counts}.</p>"
    problems = support.get("problems") or []
    if problems:
        text += pd.DataFrame(problems).to_html(index=False)
    else:
        text += "<p>Every operator is expected on the NPU.</p>"
    return text


def _partial_banner(meta: dict) -> str:
    partial = meta.get("partial")
    if not partial:
        return ""
    first_line = str(partial.get("error", "")).splitlines()[0] if partial.get("error") else ""
    return (
        "<p style='background:#ffebee;border:2px solid #c62828;padding:8px'><b>PARTIAL RUN</b>: "
        f"{html.escape(str(partial.get('backend')))} ran {partial.get('samples_done')} of "
        f"{partial.get('samples')} samples. {html.escape(first_line)}</p>"
    )


def _board_line(meta: dict) -> str:
    board = meta.get("board")
    if not board:
        return ""
    kind = (
        "a virtual board (the simulator behind sshd on 127.0.0.1)" if board.get("virtual") else "a real board"
    )
    name, platform = html.escape(str(board.get("name"))), html.escape(str(board.get("platform")))
    transport = html.escape(str(board.get("transport")))
    return f"<p>Board backend: <b>{name}</b> ({platform}, over {transport}), {kind}.</p>"
