"""Generate the labelled sets of the zoo models: rendered text, labels known by construction.

Writes next to this script, one folder per class (the folder name is the label):

- ``orientation/<angle>/pageNN.jpg``: document-like pages (paragraphs of words in several
  OpenCV Hershey fonts, a title, sometimes a header bar, a table rule or two columns, on
  white or off-white paper with a little noise), each rotated by 0, 90, 180 and 270 degrees
  clockwise, for ``lcnet-orientation`` (PP-LCNet document orientation);
- ``textline/<angle>/lineNN.jpg``: single text lines at 0 and 180 degrees, for ``ppocr-cls``
  (the PP-OCR text-line direction classifier).

Nothing third-party goes in: the words come from the list below, the glyphs from OpenCV's
built-in Hershey fonts, the randomness from a fixed seed. The same OpenCV/libjpeg writes the
same bytes on every run.

Run: ``.venv/bin/python datasets/make_task_sets.py``
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 11
JPEG_QUALITY = 85

PAGES = 12
PAGE_SIZE = 256  #: saved pages are square, so a rotation keeps the size the model resizes from
ORIENTATIONS = ("0", "90", "180", "270")  #: degrees clockwise (see orientation_of())

LINES = 16
LINE_SIZE = (48, 192)  #: (height, width) of the ppocr-cls input
TEXTLINE_ANGLES = ("0", "180")

#: Hershey fonts OpenCV draws without any font file.
FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)

WORDS = (
    "the of and to in is for on that with as by this are from at be or an it which data model "
    "layer input output value table figure report result section page number total year month "
    "order price amount invoice account date name address city street phone email customer "
    "service product quantity unit payment due balance credit note terms conditions agreement "
    "party shall under above below between each every after before during within without "
    "system network device board sample image test measure check error signal level range "
    "summary review method process control quality standard version release update change "
    "Chapter Section Table Figure Notes Page Total Invoice Report Summary Contract Annex"
).split()


def sentence(rng: np.random.Generator, n: int) -> str:
    """``n`` words drawn from WORDS, the first one capitalised."""
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), n)]
    words[0] = words[0].capitalize()
    return " ".join(words)


def fit_words(rng: np.random.Generator, width: int, font: int, scale: float, thick: int) -> str:
    """Words drawn one by one until the text would be wider than ``width`` pixels."""
    text = ""
    while True:
        candidate = (text + " " if text else "") + WORDS[rng.integers(0, len(WORDS))]
        if cv2.getTextSize(candidate, font, scale, thick)[0][0] > width:
            return text or candidate
        text = candidate


def paper(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """White or off-white paper (BGR uint8)."""
    tint = rng.integers(235, 256, 3) if rng.random() < 0.5 else np.full(3, rng.integers(245, 256))
    return np.broadcast_to(tint.astype(np.uint8), (height, width, 3)).copy()


def finish(rng: np.random.Generator, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downscale to ``size`` (height, width) and add a little sensor noise."""
    small = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA).astype(np.float32)
    small += rng.normal(0, rng.uniform(1.0, 4.0), small.shape)
    return np.clip(small, 0, 255).astype(np.uint8)


def render_page(rng: np.random.Generator) -> np.ndarray:
    """One upright document page, drawn at twice the saved size for smoother glyphs."""
    size = PAGE_SIZE * 2
    page = paper(rng, size, size)
    ink = tuple(int(v) for v in rng.integers(0, 60, 3))
    font = FONTS[rng.integers(0, len(FONTS))]
    scale = rng.uniform(0.55, 0.8) if font != cv2.FONT_HERSHEY_PLAIN else rng.uniform(1.0, 1.4)
    thick = int(rng.integers(1, 3))
    margin = int(rng.integers(20, 40))
    y = margin
    if rng.random() < 0.4:  # a coloured header bar with the title in white
        bar = int(rng.integers(40, 60))
        colour = tuple(int(v) for v in rng.integers(40, 160, 3))
        cv2.rectangle(page, (0, 0), (size, bar), colour, -1)
        cv2.putText(page, sentence(rng, 3), (margin, bar - 14), font, scale * 1.2, (255, 255, 255), 2)
        y = bar + 30
    else:  # a bold title
        y += 30
        cv2.putText(page, sentence(rng, 3), (margin, y), font, scale * 1.5, ink, thick + 1)
        y += 20
    columns = 2 if rng.random() < 0.3 else 1
    gap = 24
    col_width = (size - 2 * margin - (columns - 1) * gap) // columns
    line_height = cv2.getTextSize("Hg", font, scale, thick)[0][1] * 2 + int(rng.integers(2, 8))
    top = y + line_height
    for column in range(columns):
        x = margin + column * (col_width + gap)
        y = top
        while y < size - margin:
            lines = int(rng.integers(2, 6))
            for i in range(lines):
                if y >= size - margin:
                    break
                width = col_width if i < lines - 1 else int(col_width * rng.uniform(0.3, 0.9))
                indent = 16 if i == 0 and rng.random() < 0.5 else 0
                cv2.putText(
                    page,
                    fit_words(rng, width - indent, font, scale, thick),
                    (x + indent, y),
                    font,
                    scale,
                    ink,
                    thick,
                    cv2.LINE_AA,
                )
                y += line_height
            y += line_height // 2  # paragraph gap
            if columns == 1 and rng.random() < 0.15:  # a table rule
                cv2.line(page, (x, y - line_height // 2), (x + col_width, y - line_height // 2), ink, 1)
    return finish(rng, page, (PAGE_SIZE, PAGE_SIZE))


def orientation_of(page: np.ndarray, angle: str) -> np.ndarray:
    """``page`` rotated by ``angle`` degrees clockwise (cv2.ROTATE_90_CLOCKWISE for "90").

    Clockwise is the model's convention: its float top-1 is "90" for a page turned a quarter
    clockwise and "270" for one turned counter-clockwise (measured on these pages; the other
    direction scored 0 % on both classes).
    """
    return np.ascontiguousarray(np.rot90(page, -ORIENTATIONS.index(angle)))


def render_line(rng: np.random.Generator) -> np.ndarray:
    """One upright text line filling most of a 48x192 crop, drawn at twice that size."""
    height, width = LINE_SIZE[0] * 2, LINE_SIZE[1] * 2
    line = paper(rng, height, width)
    ink = tuple(int(v) for v in rng.integers(0, 80, 3))
    font = FONTS[rng.integers(0, len(FONTS))]
    thick = int(rng.integers(1, 4))
    # Capitals 30-45 % of the crop height: about the tight crop a text detector gives.
    cap = cv2.getTextSize("H", font, 1.0, thick)[0][1]
    scale = height * rng.uniform(0.3, 0.45) / cap
    left = int(rng.integers(4, 16))
    text = fit_words(rng, int(width * rng.uniform(0.8, 0.95)) - left, font, scale, thick)
    (_, text_h), base = cv2.getTextSize(text, font, scale, thick)
    y = (height + text_h) // 2 - base // 2
    cv2.putText(line, text, (left, y), font, scale, ink, thick, cv2.LINE_AA)
    return finish(rng, line, LINE_SIZE)


def write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"cv2.imwrite failed for {path}")


def main(out: Path = HERE) -> None:
    """Regenerate ``out``/orientation and ``out``/textline (old files are removed first)."""
    rng = np.random.default_rng(SEED)
    for folder in ("orientation", "textline"):
        shutil.rmtree(out / folder, ignore_errors=True)
    for index in range(PAGES):
        page = render_page(rng)
        for angle in ORIENTATIONS:
            write(out / "orientation" / angle / f"page{index:02d}.jpg", orientation_of(page, angle))
    for index in range(LINES):
        line = render_line(rng)
        write(out / "textline" / "0" / f"line{index:02d}.jpg", line)
        write(out / "textline" / "180" / f"line{index:02d}.jpg", np.ascontiguousarray(line[::-1, ::-1]))
    print(f"{PAGES * len(ORIENTATIONS)} pages in orientation/, {LINES * 2} lines in textline/")


if __name__ == "__main__":
    main()
