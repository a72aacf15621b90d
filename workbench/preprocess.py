"""The exact preprocessing rknn-toolkit2 applies to a sample, shared by every runner.

Measured against the toolkit's own golden tensors (tests/test_float_golden.py):
- an image file is read with OpenCV (BGR), converted to RGB unless ``quant_img_RGB2BGR``
  is set (then the model sees OpenCV's BGR order), resized with bilinear interpolation
  (``cv2.INTER_LINEAR``) to the input's height and width when it differs;
- then ``(x - mean) / std`` per channel, and the layout of the ONNX input (NCHW, or NHWC
  when the input's last axis holds the channels);
- a ``.npy`` sample must already have the ONNX input's shape; mean/std are applied to it
  along the channel axis, and its channels are never swapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Largest image decoded, in pixels (2**28 = 268M, e.g. 16384 x 16384): a small compressed
#: file can declare a huge image ("decompression bomb") and take GBs to decode. Checked
#: from the JPEG and PNG headers before decoding; OpenCV's own limit (2**30) covers the rest.
MAX_IMAGE_PIXELS = 2**28


@dataclass(frozen=True)
class Preprocess:
    """How the pixels of one model input are normalised, in the toolkit's terms.

    ``mean`` and ``std`` are per channel on the 0-255 pixel scale, as
    ``rknn.config(mean_values=..., std_values=...)`` takes them; None means 0 and 1.
    ``rgb2bgr`` is ``quant_img_RGB2BGR``: True for models trained on BGR images (OpenCV).
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    rgb2bgr: bool = False

    def __post_init__(self) -> None:
        for field in ("mean", "std"):
            value = getattr(self, field)
            if value is None:
                continue
            try:
                values = tuple(float(v) for v in (value if hasattr(value, "__iter__") else [value]))
            except (TypeError, ValueError):
                raise DatasetError(f"{field} {value!r}: give numbers, one per channel.") from None
            object.__setattr__(self, field, values)
        if self.std is not None and any(v == 0 for v in self.std):
            raise DatasetError(f"std {self.std} contains 0: every channel would divide by zero.")

    def normalise(self, x: np.ndarray, channel_axis: int) -> np.ndarray:
        """``(x - mean) / std`` along ``channel_axis``, as float32."""
        x = x.astype(np.float32)
        for values, op in ((self.mean, np.subtract), (self.std, np.divide)):
            if values is None:
                continue
            channels = x.shape[channel_axis]
            if len(values) not in (1, channels):
                raise DatasetError(
                    f"{len(values)} mean/std values for a tensor with {channels} channels: "
                    "give one value per channel."
                )
            shape = [1] * x.ndim
            shape[channel_axis] = len(values)
            x = op(x, np.asarray(values, np.float32).reshape(shape))
        return x.astype(np.float32)


def channel_axis(shape: Sequence[int]) -> int:
    """Channel axis of a 4-D input: 3 for NHWC (last axis 1, 3 or 4 and both spatial axes
    larger than 4, e.g. 1x224x224x3), else 1 (NCHW, also for 1x8x1x1 feature inputs)."""
    if len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] > 4 and shape[2] > 4:
        return 3
    return 1


def load_sample(
    path: str | Path, shape: Sequence[int], preprocess: Preprocess, *, normalise: bool = True
) -> np.ndarray:
    """Read one sample file as the toolkit would feed it to an input of ``shape``.

    With ``normalise=False`` the result stops before mean/std: the raw pixels (in the
    model's channel order and layout) that ``rknn.inference()`` takes, since an RKNN model
    applies mean/std itself.

    Raises:
        DatasetError: missing or unreadable file, or a .npy of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Sample {str(path)!r} does not exist.")
    if not normalise:
        preprocess = Preprocess(rgb2bgr=preprocess.rgb2bgr)
    if path.suffix.lower() == ".npy":
        return _load_npy(path, tuple(shape), preprocess)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(
            f"Sample {str(path)!r}: unsupported file type; use an image "
            f"({', '.join(IMAGE_SUFFIXES)}) or a .npy array of the input's shape."
        )
    return _load_image(path, tuple(shape), preprocess)


def _load_npy(path: Path, shape: tuple[int, ...], preprocess: Preprocess) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DatasetError(f"Cannot read {str(path)!r} as a .npy array: {err}") from err
    if x.shape != shape:
        raise DatasetError(
            f"{str(path)!r} has shape {x.shape}, the input expects {shape} "
            "(the toolkit takes .npy samples in the ONNX input's own layout, e.g. NCHW)."
        )
    if len(shape) == 4:
        return preprocess.normalise(x, channel_axis(shape))
    return x.astype(np.float32)


def _load_image(path: Path, shape: tuple[int, ...], preprocess: Preprocess) -> np.ndarray:
    import cv2  # the toolkit's own image reader; imported late to keep imports fast

    if len(shape) != 4 or shape[0] != 1:
        raise DatasetError(
            f"Image sample {str(path)!r} cannot feed an input of shape {shape}: images feed "
            "4-D inputs with batch 1. Give a .npy array for this input instead."
        )
    axis = channel_axis(shape)
    channels = shape[axis]
    height, width = (shape[1], shape[2]) if axis == 3 else (shape[2], shape[3])
    _check_image_file(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"OpenCV cannot decode {str(path)!r}: the image is damaged or empty.")
    if channels == 3 and img.ndim == 2:
        raise DatasetError(
            f"{str(path)!r} is a grayscale image (1 channel); the input expects 3 channels. "
            "Convert it to colour (cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)) or leave it out."
        )
    if img.dtype != np.uint8 or img.ndim != (2 if channels == 1 else 3) or img.shape[-1] == 4:
        # 16-bit, alpha channel, colour for a 1-channel input: decode as the toolkit does.
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if channels == 3 and not preprocess.rgb2bgr:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[:2] != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    img = img.reshape(height, width, -1)
    if img.shape[2] != channels:
        raise DatasetError(f"{str(path)!r} has {img.shape[2]} channels, the input expects {channels}.")
    x = img[None] if axis == 3 else img.transpose(2, 0, 1)[None]
    return preprocess.normalise(x, axis)


def _check_image_file(path: Path) -> None:
    """Refuse a JPEG cut short (OpenCV decodes what is there and fills the rest with grey,
    with only a warning on the C stderr) and an image declaring more than MAX_IMAGE_PIXELS."""
    data = path.read_bytes()
    size = None
    if data[:2] == b"\xff\xd8":
        complete, size = _jpeg_scan(data)
        if not complete:
            raise DatasetError(
                f"{str(path)!r} is a truncated JPEG: it stops before its end marker ({len(data):,} bytes), "
                "so part of the image would be grey. Copy or download it again, or leave it out."
            )
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        size = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if size and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise DatasetError(
            f"{str(path)!r} declares a {size[0]} x {size[1]} image, above the limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels (workbench.preprocess.MAX_IMAGE_PIXELS): resize it first."
        )


def _jpeg_scan(data: bytes) -> tuple[bool, tuple[int, int] | None]:
    """Walk the JPEG's markers to its end-of-image marker (FFD9). Returns whether it was
    reached and the (width, height) of the frame header. Segments carry their length, so
    an EXIF thumbnail's own end marker is skipped; data after the end marker is ignored."""
    pos, size = 2, None
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return False, size
        marker = data[pos + 1]
        if marker == 0xD9:
            return True, size
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte, RSTn, TEM: no length
            pos += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if pos + 9 <= len(data):
                size = (
                    int.from_bytes(data[pos + 7 : pos + 9], "big"),
                    int.from_bytes(data[pos + 5 : pos + 7], "big"),
                )
        pos += 2 + length
        if marker == 0xDA:  # entropy-coded data: runs to the next marker (FF not followed by 00/RSTn)
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= len(data):
                    return False, size
                following = data[pos + 1]
                if following == 0 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    pos += 1 if following == 0xFF else 2
                    continue
                break
    return False, size


def load_row(
    row: Sequence[str | Path],
    input_shapes: Mapping[str, Sequence[int]],
    preprocess: Mapping[str, Preprocess] | Preprocess,
    *,
    normalise: bool = True,
) -> dict[str, np.ndarray]:
    """One sample (a dataset.txt row: one file per input, in input order) as ``{input: array}``.

    ``preprocess`` is one Preprocess for every input or a mapping by input name (missing
    names get none); ``normalise=False`` stops before mean/std, as for ``load_sample``.
    """
    names = list(input_shapes)
    if len(row) != len(names):
        raise DatasetError(
            f"Sample {[str(p) for p in row]} has {len(row)} file(s); the model has "
            f"{len(names)} input(s) {names}."
        )
    return {
        name: load_sample(
            path,
            input_shapes[name],
            preprocess if isinstance(preprocess, Preprocess) else preprocess.get(name, Preprocess()),
            normalise=normalise,
        )
        for name, path in zip(names, row)
    }
