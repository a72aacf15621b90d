"""The toolkit's fake-quantization rules, as data, and the numpy arithmetic they use.

Measured on rknn-toolkit2 2.5.0 (zoo models lcnet-orientation and yolov8n, against the
simulator and against the quantization table the toolkit keeps in step 1's ``.data`` file):

- activations: asymmetric per-tensor int8 with the ``.quantization.cfg`` scale and zero
  point, applied only at compiled layer boundaries, rounding half to even (exact ties in
  the simulator: 2.5 -> 2, 5.5 -> 6; numpy and onnxruntime's QuantizeLinear do the same);
- weights: per-output-channel asymmetric int8 over ``[min(w, 0), max(w, 0)]`` (scale and
  zero point computed in float64 equal the toolkit's table on every channel); with
  ``quantized_method="layer"`` the same over the whole tensor (36 of lcnet's 36 conv weights
  equal the table);
- biases: int32 on the grid ``input scale x weight scale``;
- a convolution and the activation after it form one layer: the pre-activation is NOT
  requantized, except for the patterns in ``requantize`` below (depthwise conv + HardSwish,
  conv + HardSigmoid), where the toolkit rounds it to its own cfg scale first.

A new toolkit version may change any of this: ``check_rules`` compares a rule table with
the toolkit's own per-tensor flags (``qmode: replace`` marks a tensor kept inside a fused
layer), and the fidelity self-check compares the emulator with the simulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

#: Ops the toolkit fuses into the preceding convolution (or Add) as its activation.
ACTIVATIONS = ("Relu", "exSwish", "HardSwish", "HardSigmoid", "Clip", "LeakyRelu", "Sigmoid", "PRelu")


@dataclass(frozen=True)
class Rules:
    """How one toolkit version quantizes a model (see the module docstring).

    ``fuse``: (producer kind, consumer op) pairs compiled as one layer, the producer's
    output staying inside it; producer kinds are "conv" (group 1), "depthwise" (group =
    channels) and op types. ``requantize``: the fused pairs whose inner tensor is rounded
    to its own cfg scale all the same. ``weights``: "asymmetric" (the toolkit's) or
    "symmetric" (a deliberately wrong rule, for the self-check's test).
    ``float16_preactivation``: see the field.
    """

    toolkit: str
    fuse: frozenset[tuple[str, str]]
    requantize: frozenset[tuple[str, str]] = frozenset()
    weights: str = "asymmetric"
    #: the range of a pre-activation whose fusion a float16 op breaks: "cfg" (the clipped
    #: range; measured on 2.5.0 with snapshots of lcnet's first two layers) or "ori"
    float16_preactivation: str = "cfg"

    def with_changes(self, **changes) -> Rules:
        """A copy with some fields changed (e.g. a wrong rule to test the self-check)."""
        return replace(self, **changes)


_CONV_ACTS = {(kind, act) for kind in ("conv", "depthwise") for act in ACTIVATIONS}

#: rknn-toolkit2 2.5.0: every conv + activation pair fuses; of the convs the toolkit splits
#: out of a concat + conv ("..._conv"), the one the summing Add reads second fuses into it
#: (ConvAdd; the first stays a layer of its own: "Add:first" is not in the table).
RULES_2_5_0 = Rules(
    toolkit="2.5.0",
    fuse=frozenset(_CONV_ACTS | {("conv", "Add"), ("depthwise", "Add")}),
    requantize=frozenset({("depthwise", "HardSwish"), ("conv", "HardSigmoid"), ("depthwise", "HardSigmoid")}),
)

#: Rule tables by toolkit version; the newest known one is used for other versions.
RULES = {"2.5.0": RULES_2_5_0}


def rules_for(version: str) -> Rules:
    """The rule table measured for toolkit ``version`` (the newest one if not measured)."""
    return RULES.get(version, RULES[max(RULES)])


@dataclass(frozen=True)
class QParams:
    """Asymmetric quantization of one tensor: ``q = clip(round(x / scale) + zero_point)``."""

    scale: float
    zero_point: int
    bits: int = 8

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @classmethod
    def from_range(cls, lo: float, hi: float, bits: int = 8) -> QParams:
        """The toolkit's parameters for the range [lo, hi] (zero always representable)."""
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        levels = 2**bits - 1
        scale = (hi - lo) / levels if hi > lo else 1.0
        return cls(scale, int(-(2 ** (bits - 1)) - np.round(lo / scale)), bits)


def fake_quant(x: np.ndarray, scale, zero_point, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """Quantize and dequantize ``x``, rounding half to even as the simulator does (and
    onnxruntime's QuantizeLinear); ``scale``/``zero_point`` broadcast against ``x``."""
    x = np.asarray(x, np.float64)
    q = np.clip(np.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def weight_params(
    w: np.ndarray, scheme: str = "asymmetric", per_channel: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (axis 0) int8 scale and zero point of a weight tensor; with
    ``per_channel`` False one pair for the whole tensor (repeated per channel).

    "asymmetric": over [min(w, 0), max(w, 0)], the toolkit's; "symmetric": over
    [-max|w|, max|w|] with zero point 0 (not the toolkit's: kept to test the self-check).
    """
    flat = np.asarray(w, np.float64).reshape(w.shape[0] if per_channel else 1, -1)
    lo, hi = np.minimum(flat.min(1), 0.0), np.maximum(flat.max(1), 0.0)
    if scheme == "symmetric":
        peak = np.maximum(-lo, hi)
        scale = np.where(peak > 0, peak / 127.0, 1.0)
        zero = np.zeros_like(scale)
    else:
        scale = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
        zero = -128.0 - np.round(lo / scale)
    return np.broadcast_to(scale, w.shape[:1]).copy(), np.broadcast_to(zero, w.shape[:1]).copy()


def fake_quant_weight(
    w: np.ndarray, scheme: str = "asymmetric", per_channel: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``w`` through int8 (float32), and the per-channel scales (all equal per-layer)."""
    scale, zero = weight_params(w, scheme, per_channel)
    shape = (-1,) + (1,) * (w.ndim - 1)
    out = fake_quant(w, scale.reshape(shape), zero.reshape(shape))
    return out.astype(np.float32), scale


def fake_quant_bias(b: np.ndarray, input_scale: float, weight_scales: np.ndarray) -> np.ndarray:
    """``b`` on the int32 grid of ``input scale x weight scale`` (per channel)."""
    grid = input_scale * np.asarray(weight_scales, np.float64)
    return (np.round(np.asarray(b, np.float64) / grid) * grid).astype(np.float32)


def check_rules(fused: Mapping[str, bool], quant_tab: Mapping[str, dict]) -> dict[str, list[str]]:
    """Where a rule table disagrees with the toolkit's own table (step 1's ``.data``).

    Args:
        fused: ``{tensor: True when the rules keep it unrounded inside a fused layer}`` for
            every tensor the rules considered (``Emulation.unrounded()``).
        quant_tab: the toolkit's per-tensor table; ``qmode: "replace"`` marks a tensor it
            keeps inside a fused layer.
    Returns:
        ``{"rules_fuse": [...], "toolkit_fuses": [...]}``: tensors fused by one side only.
    """
    out: dict[str, list[str]] = {"rules_fuse": [], "toolkit_fuses": []}
    for name, inside in fused.items():
        entry = quant_tab.get(name)
        if entry is None:
            continue
        toolkit = entry.get("qmode") == "replace"
        if inside and not toolkit:
            out["rules_fuse"].append(name)
        elif toolkit and not inside:
            out["toolkit_fuses"].append(name)
    return out


@dataclass
class TensorQuant:
    """One activation's entry of the ``.quantization.cfg``."""

    name: str
    dtype: str  #: "int8", "float16", "float32", ...
    params: QParams | None  #: None for float tensors
    ori_params: QParams | None = None  #: the same over the unclipped calibration range
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_cfg(cls, name: str, entry: dict) -> TensorQuant:
        dtype = str(entry.get("dtype", ""))
        params = ori = None
        if dtype.startswith("int") and entry.get("scale"):
            bits = int(dtype[3:])
            params = QParams(float(entry["scale"][0]), int(entry["zero_point"][0]), bits)
            if entry.get("ori_min") and entry.get("ori_max"):
                ori = QParams.from_range(entry["ori_min"][0], entry["ori_max"][0], bits)
        return cls(name, dtype, params, ori, entry)
