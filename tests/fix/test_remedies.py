"""try_remedies: one call, each remedy confirmed on the simulator or reported as not applied."""

import math

import pandas as pd
import pytest

from workbench.errors import WorkbenchError
from workbench.fix.evaluate import Score
from workbench.fix.remedies import COLUMNS, Remedies, confirmed, try_remedies
from workbench.model import OnnxModel

from .conftest import CONFIG
from .test_rewrites import badly_scaled


def test_a_gain_is_more_agreement_or_the_same_agreement_and_half_a_db():
    base = Score((), sqnr_db=20.0, agreement=0.5)
    assert confirmed(Score((), sqnr_db=10.0, agreement=0.75), base)  # answers first
    assert not confirmed(Score((), sqnr_db=40.0, agreement=0.25), base)
    assert confirmed(Score((), sqnr_db=20.5, agreement=0.5), base)
    assert not confirmed(Score((), sqnr_db=20.4, agreement=0.5), base)
    assert not confirmed(Score((), sqnr_db=30.0, error="the toolkit refused"), base)
    assert not confirmed(Score(()), base)  # nothing measured (NaN)
    assert confirmed(Score((), sqnr_db=20.5), Score((), sqnr_db=20.0))  # no adapter: SQNR


def test_an_sqnr_gain_must_pay_for_the_cycles_it_adds():
    base = Score((), sqnr_db=20.0, agreement=0.5, cycles=1000)
    # lcnet's auto_hybrid, measured: +0.7 dB at +15 % cycles; it needs 0.5 + 3 dB
    assert not confirmed(Score((), sqnr_db=20.7, agreement=0.5, cycles=1150), base)
    assert confirmed(Score((), sqnr_db=23.6, agreement=0.5, cycles=1150), base)
    assert confirmed(Score((), sqnr_db=20.7, agreement=0.5, cycles=900), base)  # cheaper: 0.5 dB
    assert confirmed(Score((), sqnr_db=15.0, agreement=0.75, cycles=2000), base)  # answers back: kept


def test_the_verdict_leads_with_answers_and_names_the_best_remedy():
    scores = {
        "int8": Score((), sqnr_db=20.35, agreement=20 / 24, cycles=1000),
        "settings": Score((), sqnr_db=24.16, agreement=1.0, cycles=1000),
        "ranges": Score((), sqnr_db=25.74, agreement=22 / 24, cycles=1000),
    }
    table = pd.DataFrame(
        [
            {"remedy": "int8", "kept": False, "note": "w8a8"},
            {"remedy": "settings", "kept": True, "note": "best: mmse / channel"},
            {
                "remedy": "ranges",
                "kept": True,
                "note": "5 tensors clipped, 2 widened; emulator 20.4 -> 25.3 dB",
            },
        ]
    )
    found = Remedies(table, scores)
    assert found.best() == "settings"  # more answers back beats more dB
    assert found.verdict() == (
        "int8: 83 % of answers agree with float, outputs at 20.4 dB. Best remedy: settings (best: mmse / "
        "channel): 100 % of answers agree with float, outputs at 24.2 dB, cycles +0 %. Also confirmed: "
        "ranges (92 % of answers agree with float, outputs at 25.7 dB)."
    )
    found.table["kept"] = False
    assert found.best() is None and "No remedy confirmed a gain" in found.verdict()


def test_unknown_remedy_is_refused_before_any_build(small_set):
    model = OnnxModel.from_proto(badly_scaled())
    with pytest.raises(WorkbenchError, match="Unknown remedies \\['magic'\\]"):
        try_remedies(model, CONFIG, small_set, small_set.head(1), remedies=["magic"])


@pytest.mark.toolkit
def test_equalization_is_kept_and_bias_correction_is_not(small_set, tmp_path, monkeypatch):
    from workbench.task.adapters import get_adapter

    model = OnnxModel.from_proto(badly_scaled())
    adapter = get_adapter("outputs", model)
    result = try_remedies(
        model, CONFIG, small_set, small_set.head(2), adapter, remedies=("cle", "bias"), progress=False
    )
    table = result.table.set_index("remedy")
    assert list(result.table.columns) == COLUMNS and list(table.index) == ["int8", "cle", "bias"]
    # measured: int8 -2.3 dB, no sample's outputs agree; CLE 32.5 dB, all agree
    assert table.loc["int8", "sqnr_db"] < 5 and table.loc["int8", "agreement"] == 0.0
    assert table.loc["cle", "kept"] and table.loc["cle", "agreement"] == 1.0
    assert table.loc["cle", "sqnr_db"] > 25 and table.loc["cle", "builds"] == 1
    # the bias shifts here are small: the simulator sees no gain and it is not applied
    assert not table.loc["bias", "kept"]
    assert "no gain, not applied" in table.loc["bias", "note"]
    assert table.loc["bias", "builds"] >= 1 and not math.isnan(table.loc["bias", "sqnr_db"])
    assert isinstance(result.results["cle"], OnnxModel)
    assert table.loc["int8", "cycles"] > 0 and (result.table.wall_s > 0).all()
    # the kept rewrite exports as the equalized .onnx and its .rknn (a relative folder, as a
    # notebook gives it: the toolkit worker runs elsewhere)
    monkeypatch.chdir(tmp_path)
    folder = result.export(result.best(), "fixed", model, small_set)
    assert folder == tmp_path / "fixed"
    stem = model.name.replace(" ", "_")
    assert {f"{stem}.onnx", f"{stem}.rknn", "remedy.json"} <= {p.name for p in folder.iterdir()}
    assert OnnxModel.load(folder / f"{stem}.onnx").to_bytes() == result.results["cle"].to_bytes()
