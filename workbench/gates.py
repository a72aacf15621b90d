"""The pass/fail gate of a divergence run: the library decides, the CLI only prints it.

``gate(result, min_sqnr=..., min_cosine=...)`` checks every backend of the run (the
simulator and each ``board:<name>``), on the model outputs or, with ``per_layer``, on every
compared layer. A partial run (a board that stopped early, ``meta["partial"]``) never
passes, whatever the thresholds: half a comparison is not a result. A notebook calling
``gate`` gets the same verdict as ``rknn-workbench diverge/report`` exits with (1 = failed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

from workbench.errors import WorkbenchError


@dataclass
class BackendCheck:
    """The thresholds applied to one backend's layers."""

    backend: str  #: "simulator" or "board:<name>"
    checked: int  #: layers (or model outputs) that have values and were checked
    failing: list[dict] = field(default_factory=list)  #: layer, op_type, sqnr_db_mean, cosine_mean

    @property
    def passed(self) -> bool:
        return not self.failing


@dataclass
class GateResult:
    """The verdict: ``passed``, the check of each backend and why it failed."""

    passed: bool
    min_sqnr_db: float | None  #: threshold on the mean SQNR (dB), None when not gated
    min_cosine: float | None  #: threshold on the mean cosine, None when not gated
    scope: str  #: "model outputs" or "every layer"
    backends: dict[str, BackendCheck] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  #: one line per failure cause

    @property
    def gated(self) -> bool:
        """Whether any threshold was given."""
        return self.min_sqnr_db is not None or self.min_cosine is not None

    @property
    def checked(self) -> int:
        return sum(c.checked for c in self.backends.values())

    @property
    def failing(self) -> list[dict]:
        """Every failing layer of every backend, with a ``backend`` key."""
        return [{"backend": c.backend, **row} for c in self.backends.values() for row in c.failing]

    def to_dict(self) -> dict:
        """Plain data for --json: the fields plus ``checked`` and ``failing``."""
        out = asdict(self)
        out["backends"] = {name: {**asdict(c), "passed": c.passed} for name, c in self.backends.items()}
        return {**out, "checked": self.checked, "failing": self.failing}


def gate(
    result, min_sqnr: float | None = None, min_cosine: float | None = None, per_layer: bool = False
) -> GateResult:
    """Check a Divergence against thresholds on every backend it holds.

    Args:
        result: the Divergence (computed, or loaded from a run folder).
        min_sqnr: fail when a checked layer's mean SQNR (dB) is lower (or missing).
        min_cosine: fail when a checked layer's mean cosine is lower (or missing).
        per_layer: check every compared layer, not only the model outputs.

    Returns:
        GateResult; ``passed`` is False when a threshold is missed on any backend, when a
        backend of the run has no values to check, or when the run is partial.

    Raises:
        WorkbenchError: thresholds given but the run compared none of the checked layers on
            any backend (nothing to decide on), or a threshold is NaN.
    """
    for name, value in (("min_sqnr", min_sqnr), ("min_cosine", min_cosine)):
        if value is not None and value != value:
            raise WorkbenchError(f"{name} is NaN: give a number (e.g. --min-sqnr 20).")
    scope = "every layer" if per_layer else "model outputs"
    verdict = GateResult(True, min_sqnr, min_cosine, scope)
    partial = result.meta.get("partial")
    if partial:
        error = (str(partial.get("error") or "").splitlines() or [""])[0]
        verdict.reasons.append(
            f"partial run: {partial.get('backend', 'a backend')} ran {partial.get('samples_done', '?')} of "
            f"{partial.get('samples', '?')} samples ({error or 'no reason recorded'})"
        )
    if verdict.gated:
        outputs = list(result.meta.get("model", {}).get("outputs", {}))
        for backend in _backends(result):
            summary = result.summary(backend)
            checked = summary if per_layer else summary[summary.layer.isin(outputs)]
            check = BackendCheck(backend, len(checked), _failing(checked, min_sqnr, min_cosine))
            verdict.backends[backend] = check
            if checked.empty:
                verdict.reasons.append(f"{backend}: no compared {scope} to check")
            elif check.failing:
                verdict.reasons.append(f"{backend}: {len(check.failing)} of {check.checked} {scope} miss")
        if verdict.checked == 0:
            raise WorkbenchError(
                f"No compared {'layer' if per_layer else 'model output'} to check the thresholds on: "
                "the run has none (see its summary); use --per-layer to gate on every layer."
            )
    verdict.passed = not verdict.reasons
    return verdict


def _backends(result) -> list[str]:
    """Backends named in the meta or present in the table, simulator first."""
    named = list(result.meta.get("backends") or [])
    present = [b for b in result.table.backend.unique() if b not in named]
    return sorted(dict.fromkeys([*named, *present]) or ["simulator"], key=lambda b: b != "simulator")


def _failing(checked: pd.DataFrame, min_sqnr: float | None, min_cosine: float | None) -> list[dict]:
    bad = pd.Series(False, index=checked.index)
    if min_sqnr is not None:  # NaN (no value) fails too
        bad |= ~(checked.sqnr_db_mean >= min_sqnr)
    if min_cosine is not None:
        bad |= ~(checked.cosine_mean >= min_cosine)
    return checked[bad][["layer", "op_type", "sqnr_db_mean", "cosine_mean"]].to_dict("records")
