"""first_divergence ranks origins by the error they make and gives each its share."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from workbench.compare.result import COLUMNS, Divergence
from workbench.compare.rows import flag_guarded, with_single_layer

CHAIN = [("l1", 40.0), ("l2", 15.0), ("l3", 14.0), ("l4", 10.0), ("l5", 9.9)]


def _chain(single: dict[str, float] | None = None) -> Divergence:
    """A chain l1 -> ... -> l5 with the given SQNRs (dB) on one sample."""
    single = single or {}
    rows = [
        {
            **dict.fromkeys(COLUMNS, np.nan),
            "index": i,
            "layer": layer,
            "op_type": "Conv",
            "rknn_layer": layer,
            "sample": 0,
            "backend": "simulator",
            "status": "compared",
            "cosine": 0.99,
            "sqnr_db": db,
            "flag": "",
            "toolkit_single_cos": single.get(layer, np.nan),
        }
        for i, (layer, db) in enumerate(CHAIN)
    ]
    parents = {layer: [CHAIN[i - 1][0]] if i else [] for i, (layer, _) in enumerate(CHAIN)}
    return Divergence(pd.DataFrame(rows, columns=list(COLUMNS)), {"parents": parents})


def test_shares_from_the_sqnr_drops():
    table = _chain().first_divergence().set_index("layer")
    assert list(table.verdict) == ["ok", "origin", "inherited", "origin", "inherited"]
    nmse = {layer: 10 ** (-db / 10) for layer, db in CHAIN}  # l4: 0.1 - 0.0398 = 0.0602 added
    added = {"l1": nmse["l1"] - 1e-10, "l2": nmse["l2"] - nmse["l1"], "l4": nmse["l4"] - nmse["l3"]}
    # along a chain the added noise sums to the output's: the shares are exact there
    assert table.share.sum() == pytest.approx(1.0)
    assert table.share["l4"] == pytest.approx(added["l4"] / (nmse["l5"] - 1e-10))
    assert table.share["l2"] == pytest.approx(added["l2"] / (nmse["l5"] - 1e-10))
    assert table.local_drop_db["l4"] == pytest.approx(4.0)
    assert table.local_sqnr_db["l4"] == pytest.approx(-10 * np.log10(added["l4"]))


def test_origins_are_ranked_by_share():
    result = _chain()
    top = result.origins(n=3)
    assert list(top.layer) == ["l4", "l2"]  # l4 adds 0.060 of nmse, l2 0.032
    assert list(result.origins(n=1).layer) == ["l4"]
    assert list(top.columns[:5]) == ["layer", "op_type", "verdict", "share", "sqnr_db_mean"]


def test_single_layer_cosine_is_the_local_error_where_present():
    """The toolkit's single-layer cosine 0.9 at l2 (nmse 1/0.81 - 1 = 0.235) outranks l4."""
    table = _chain({"l2": 0.9}).first_divergence().set_index("layer")
    assert table.local_sqnr_db["l2"] == pytest.approx(-10 * np.log10(1 / 0.81 - 1))
    assert table.share.idxmax() == "l2"


def test_column_set_keeps_what_callers_use():
    table = _chain().first_divergence()
    used = {"layer", "op_type", "rknn_layer", "sqnr_db_mean", "sqnr_db_worst", "cosine_mean"}
    assert used | {"verdict", "upstream_sqnr_db", "index", "single_cos_mean"} <= set(table.columns)
    assert table.columns[-1] == "single_cos_mean"


def test_single_layer_cosine_decides_where_present():
    """l4 loses 4 dB at its boundary, but the toolkit rates it 0.9999 on its own: the error
    is inherited, not made there (a fused saturating activation upstream can hide the
    real origin's error at its boundary). l2, with no single-layer cosine, is judged by its
    SQNR drop as before."""
    table = _chain({"l4": 0.9999}).first_divergence().set_index("layer")
    assert table.verdict["l4"] == "inherited"
    assert table.verdict["l2"] == "origin"
    assert list(_chain({"l4": 0.9999, "l2": 0.98}).origins(n=5).layer) == ["l2"]


def test_rows_measured_on_a_changed_model_are_left_out():
    """A row flagged marking-changed-quantization never reaches summary() or the verdicts."""
    result = _chain()
    result.table.loc[result.table.layer == "l4", "flag"] = "transposed,marking-changed-quantization"
    summary = result.summary()
    assert "l4" not in set(summary.layer) and len(summary) == 4
    table = result.first_divergence().set_index("layer")
    assert "l4" not in table.index
    assert table.upstream_sqnr_db["l5"] == 14.0  # l5's nearest compared parent is l4 (left out)


def _row(layer, status, index, **values):
    base = {**dict.fromkeys(COLUMNS, np.nan), "layer": layer, "status": status, "index": index}
    return {**base, "flag": "", "sample": 0, "rknn_op": None, **values}


def test_a_snapshot_sample_completes_the_markall_rows():
    """Cosines joined by layer; a layer mark-all cannot see (fused, or left unmarked) is
    taken from the snapshot; the snapshot's unmapped layers are added; nothing else moves."""
    marked = [
        _row("a", "compared", 0, cosine=0.999),
        _row("gate_logits", "fused", 1),
        _row("gate", "compared", 2, cosine=1.0),
    ]
    snapshot = [
        _row("a", "compared", 0, cosine=0.998, toolkit_single_cos=0.9995, rknn_op="Conv"),
        _row("gate_logits", "compared", 1, cosine=0.55, toolkit_single_cos=0.55),
        _row("norm#1", "unmapped", 1.5, toolkit_single_cos=0.99),
        _row("gate", "compared", 2, cosine=1.0, toolkit_single_cos=1.0),
    ]
    rows = {r["layer"]: r for r in with_single_layer(marked, snapshot)}
    assert list(rows) == ["a", "gate_logits", "norm#1", "gate"]
    assert rows["a"]["cosine"] == 0.999 and rows["a"]["toolkit_single_cos"] == 0.9995  # mark-all's number
    assert rows["a"]["rknn_op"] == "Conv"
    assert (rows["gate_logits"]["status"], rows["gate_logits"]["cosine"]) == ("compared", 0.55)
    assert rows["gate_logits"]["flag"] == "snapshot"
    assert rows["norm#1"]["status"] == "unmapped"


def test_guard_findings_become_flags():
    guard = SimpleNamespace(unmarked={"cls": "[-7, 0] -> [-26, 0]"}, changed={"both": "[-7, 9] -> [-26, 9]"})
    rows = [
        _row("cls", "fused", 0),  # left unmarked: no number on this sample
        _row("cls", "compared", 0, flag="snapshot"),  # ... measured by the snapshot sample
        _row("both", "compared", 1, flag="reshaped"),  # still marked, quantization changed
        _row("y", "compared", 2),
    ]
    flags = [r["flag"] for r in flag_guarded(rows, guard)]
    assert flags == [
        "left-unmarked,marking-changed-quantization",
        "snapshot,left-unmarked",
        "reshaped,marking-changed-quantization",
        "",
    ]
    assert flag_guarded(rows, None) == rows
