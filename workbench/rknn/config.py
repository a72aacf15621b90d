"""BuildConfig: what the toolkit is told for one conversion, and a content hash of it."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.errors import ConfigError
from workbench.preprocess import Preprocess, channel_axis

#: target_platform values rknn-toolkit2 2.5.0 accepts.
PLATFORMS = (
    "rk3588",
    "rk3576",
    "rk3568",
    "rk3566",
    "rk3562",
    "rv1103",
    "rv1106",
    "rv1103b",
    "rv1106b",
    "rv1126b",
    "rk2118",
)

#: quantized_dtype -> platforms whose build accepts it, measured with rknn-toolkit2 2.5.0
#: (every platform x dtype built once; rk2118 builds float16 only).
DTYPE_PLATFORMS = {
    "w8a8": tuple(p for p in PLATFORMS if p != "rk2118"),
    "w8a16": ("rk3562",),
    "w16a16i_dfp": ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562", "rv1103", "rv1106", "rv1126b"),
    "w4a16": ("rk3576", "rv1126b"),
}
ALGORITHMS = ("normal", "kl_divergence", "mmse")
METHODS = ("channel", "layer")


@dataclass(frozen=True)
class BuildConfig:
    """Conversion settings: target, quantization and the per-input preprocessing.

    ``preprocess`` maps model input names to their :class:`Preprocess`; it becomes the
    toolkit's ``mean_values``/``std_values``/``quant_img_RGB2BGR`` in input order.
    ``float_layers`` (tensor names) are kept in float16 by hybrid quantization;
    ``auto_hybrid`` lets the toolkit choose them itself (``build(auto_hybrid=True)``) until
    each layer's cosine reaches ``auto_hybrid_cos_thresh``.
    Invalid combinations raise ConfigError here, before any build.
    """

    target_platform: str = "rk3588"
    do_quantization: bool = True
    quantized_dtype: str = "w8a8"
    quantized_algorithm: str = "normal"
    quantized_method: str = "channel"
    optimization_level: int = 3
    preprocess: Mapping[str, Preprocess] = field(default_factory=dict)
    float_layers: tuple[str, ...] = ()
    auto_hybrid: bool = False
    auto_hybrid_cos_thresh: float = 0.98

    def __post_init__(self) -> None:
        if isinstance(self.float_layers, str):
            raise ConfigError(
                f"float_layers is a list of tensor names, not the string {self.float_layers!r}."
            )
        object.__setattr__(self, "float_layers", tuple(sorted(set(self.float_layers))))
        if (self.float_layers or self.auto_hybrid) and not self.do_quantization:
            raise ConfigError(
                "float_layers and auto_hybrid mix float16 into a quantized model: use do_quantization=True."
            )
        if self.float_layers and self.auto_hybrid:
            raise ConfigError(
                "Give float_layers (your hybrid choice) or auto_hybrid (the toolkit's), not both."
            )
        if not 0.0 < self.auto_hybrid_cos_thresh <= 1.0:
            raise ConfigError(
                f"auto_hybrid_cos_thresh is a cosine in (0, 1], not {self.auto_hybrid_cos_thresh}."
            )
        _one_of("target_platform", self.target_platform, PLATFORMS)
        _one_of("quantized_algorithm", self.quantized_algorithm, ALGORITHMS)
        _one_of("quantized_method", self.quantized_method, METHODS)
        _one_of("quantized_dtype", self.quantized_dtype, tuple(DTYPE_PLATFORMS))
        if self.optimization_level not in (0, 1, 2, 3):
            raise ConfigError(f"optimization_level must be 0-3, not {self.optimization_level!r}.")
        if self.target_platform == "rk2118" and self.do_quantization:
            raise ConfigError("rk2118 runs float16 models only: use do_quantization=False.")
        allowed = DTYPE_PLATFORMS[self.quantized_dtype]
        if self.do_quantization and self.target_platform not in allowed:
            raise ConfigError(
                f"quantized_dtype {self.quantized_dtype!r} is not available on "
                f"{self.target_platform}; it is on {', '.join(allowed)}. Use 'w8a8' there."
            )
        if not isinstance(self.preprocess, Mapping) or not all(
            isinstance(p, Preprocess) for p in self.preprocess.values()
        ):
            raise ConfigError("preprocess maps input names to Preprocess, e.g. {'images': Preprocess(...)}.")
        if len({p.rgb2bgr for p in self.preprocess.values()}) > 1:
            raise ConfigError(
                "The toolkit takes one quant_img_RGB2BGR flag for all inputs, but the inputs "
                "disagree on rgb2bgr: give every image input the same colour order."
            )
        for name, pre in self.preprocess.items():
            for field_name in ("mean", "std"):
                values = getattr(pre, field_name) or ()
                if not all(math.isfinite(v) for v in values):
                    raise ConfigError(
                        f"{field_name} {list(values)} of input {name!r} holds NaN or infinity: give finite "
                        "numbers on the 0-255 pixel scale (e.g. --mean 123.675,116.28,103.53)."
                    )

    def check_model(self, model) -> None:
        """Raise ConfigError if the preprocessing does not fit ``model``'s inputs."""

        unknown = sorted(set(self.preprocess) - set(model.inputs))
        if unknown:
            raise ConfigError(f"preprocess names {unknown}; the model's inputs are {list(model.inputs)}.")
        for name, pre in self.preprocess.items():
            shape = model.inputs[name]
            channels = shape[channel_axis(shape)] if len(shape) == 4 else None
            for field_name in ("mean", "std"):
                values = getattr(pre, field_name)
                if values is not None and channels is not None and len(values) not in (1, channels):
                    raise ConfigError(
                        f"{len(values)} {field_name} values for input {name!r} with {channels} channels "
                        f"(shape {list(shape)}): give one value per channel."
                    )

    def toolkit_kwargs(self, inputs: Mapping[str, Sequence[int]]) -> dict:
        """Keyword arguments for ``rknn.config()`` for a model with these inputs (name -> shape)."""
        pre = [self.preprocess.get(name, Preprocess()) for name in inputs]
        kwargs = {
            "target_platform": self.target_platform,
            "quantized_dtype": self.quantized_dtype,
            "quantized_algorithm": self.quantized_algorithm,
            "quantized_method": self.quantized_method,
            "optimization_level": self.optimization_level,
            # The toolkit takes one RGB2BGR flag for all image inputs.
            "quant_img_RGB2BGR": any(p.rgb2bgr for p in pre),
        }
        if any(p.mean is not None or p.std is not None for p in pre):
            # The toolkit wants a full per-channel list for every input once any has one.
            channels = [_channels(shape) for shape in inputs.values()]
            kwargs["mean_values"] = [_per_channel(p.mean, c, 0.0) for p, c in zip(pre, channels)]
            kwargs["std_values"] = [_per_channel(p.std, c, 1.0) for p, c in zip(pre, channels)]
        return kwargs

    def build_args(self, inputs: Mapping[str, Sequence[int]], dataset: str | Path) -> dict:
        """Keyword arguments of the toolkit worker's ``build`` command for this config."""
        config = self.toolkit_kwargs(inputs)
        if self.auto_hybrid:
            config["auto_hybrid_cos_thresh"] = self.auto_hybrid_cos_thresh
        return {
            "config": config,
            "dataset": str(dataset) if self.do_quantization else None,
            "do_quantization": self.do_quantization,
            "float_layers": list(self.float_layers),
            "auto_hybrid": self.auto_hybrid,
        }

    @property
    def variant(self) -> str:
        """Short label of the quantization variant: int8, hybrid (n float16), auto_hybrid, float."""
        if not self.do_quantization:
            return "float16"
        if self.auto_hybrid:
            return f"auto_hybrid (cos {self.auto_hybrid_cos_thresh})"
        if self.float_layers:
            return f"hybrid ({len(self.float_layers)} float16)"
        return self.quantized_dtype

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocess"] = {k: asdict(v) for k, v in self.preprocess.items()}
        d["float_layers"] = list(self.float_layers)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> BuildConfig:
        data = dict(data)
        data["preprocess"] = {k: Preprocess(**v) for k, v in data.get("preprocess", {}).items()}
        return cls(**data)

    def digest(self) -> str:
        """Stable hash of the settings, part of the build cache key."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _channels(shape: Sequence[int]) -> int:

    if len(shape) == 4:
        return int(shape[channel_axis(shape)])
    return int(shape[1]) if len(shape) > 1 else 1


def _per_channel(values, channels: int, default: float) -> list[float]:
    if values is None:
        return [default] * channels
    return list(values) * channels if len(values) == 1 else list(values)


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"Unknown {name} {value!r}. Valid: {', '.join(map(str, allowed))}.")
