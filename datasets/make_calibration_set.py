"""Build the default calibration set from photographs that ship inside scikit-image.

Writes ``calibration/NN_<name>.jpg`` (shorter side 256 px, JPEG quality 90) next to this
script, plus ``dataset.txt`` (all images) and ``dataset_small.txt`` (first 4) in the
rknn-toolkit2 list format: one sample per line, paths relative to the list file.

Run: ``.venv/bin/python datasets/make_calibration_set.py`` (needs scikit-image).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "calibration"
SHORT_SIDE = 256
JPEG_QUALITY = 90
SMALL_COUNT = 4

#: (file stem, skimage.data function). All load offline from the skimage wheel. Seven colour
#: photographs with a stated licence ship offline, so five grayscale photographs complete the set;
#: they are stored as 3-channel images. The colour ones come first (dataset_small.txt).
IMAGES: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut"),
    ("chelsea", "chelsea"),
    ("coffee", "coffee"),
    ("rocket", "rocket"),
    ("hubble_deep_field", "hubble_deep_field"),
    ("immunohistochemistry", "immunohistochemistry"),
    ("retina", "retina"),
    ("camera", "camera"),
    ("coins", "coins"),
    ("clock", "clock"),
    ("grass", "grass"),
    ("gravel", "gravel"),
)


def resize_short_side(image: np.ndarray, short_side: int = SHORT_SIDE) -> np.ndarray:
    """Resize so the shorter side is ``short_side`` px, keeping the aspect ratio."""
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    size = (round(width * scale), round(height * scale))  # cv2 wants (width, height)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Turn a skimage RGB or grayscale uint8 array into a 3-channel BGR array for cv2."""
    if image.dtype != np.uint8:
        raise TypeError(f"expected uint8, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR)


def write_list(path: Path, files: list[Path]) -> None:
    """Write a toolkit dataset list: one path per line, relative to the list file."""
    path.write_text("".join(f"{f.relative_to(path.parent).as_posix()}\n" for f in files))


def main() -> None:
    """Load, resize and save every image, then write dataset.txt and dataset_small.txt."""
    import skimage.data

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for index, (stem, loader) in enumerate(IMAGES):
        image = getattr(skimage.data, loader)()
        bgr = resize_short_side(to_bgr_uint8(image))
        path = OUT_DIR / f"{index:02d}_{stem}.jpg"
        if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"cv2.imwrite failed for {path}")
        files.append(path)
        print(f"{path.relative_to(HERE)}  {bgr.shape[1]}x{bgr.shape[0]}")
    write_list(HERE / "dataset.txt", files)
    write_list(HERE / "dataset_small.txt", files[:SMALL_COUNT])


if __name__ == "__main__":
    main()
