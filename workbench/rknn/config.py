"""BuildConfig: what the toolkit is told for one conversion, and a content hash of it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from workbench.errors import WorkbenchError
from workbench.preprocess import Preprocess

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


@dataclass(frozen=True)
class BuildConfig:
    """Conversion settings: target, quantization and the per-input preprocessing.

    ``preprocess`` maps model input names to their :class:`Preprocess`; it becomes the
    toolkit's ``mean_values``/``std_values``/``quant_img_RGB2BGR`` in input order.
    """

    target_platform: str = "rk3588"
    do_quantization: bool = True
    quantized_dtype: str = "w8a8"
    quantized_algorithm: str = "normal"
    quantized_method: str = "channel"
    optimization_level: int = 3
    preprocess: Mapping[str, Preprocess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target_platform not in PLATFORMS:
            raise WorkbenchError(
                f"Unknown target platform {self.target_platform!r}. Valid: {', '.join(PLATFORMS)}."
            )

    def toolkit_kwargs(self, input_names: list[str]) -> dict:
        """Keyword arguments for ``rknn.config()`` for a model with these inputs."""
        pre = [self.preprocess.get(name, Preprocess()) for name in input_names]
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
            kwargs["mean_values"] = [list(p.mean) if p.mean else [0.0] for p in pre]
            kwargs["std_values"] = [list(p.std) if p.std else [1.0] for p in pre]
        return kwargs

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocess"] = {k: asdict(v) for k, v in self.preprocess.items()}
        return d

    def digest(self) -> str:
        """Stable hash of the settings, part of the build cache key."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
