"""Generate the labelled sets of the zoo models: rendered text, labels known by construction.

Writes next to this script, one folder per class (the folder name is the label):

- ``orientation/<angle>/pageNN.jpg``: 14 document-like pages in seven layouts (PAGE_STYLES:
  paragraphs in one or two columns, a few lines only, small print, faint ink, a table, a bar
  chart; a title or a header bar; OpenCV Hershey fonts on white or off-white paper with a
  little noise), each rotated by 0, 90, 180 and 270 degrees clockwise, for
  ``lcnet-orientation`` (PP-LCNet document orientation);
- ``textline/<angle>/lineNN.jpg``: 16 single text lines at 0 and 180 degrees, for ``ppocr-cls``
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

#: Page layouts, two pages each: the set spans easy pages (full text) and harder ones (little
#: text, small or faint text, a table or a chart taking space).
PAGE_STYLES = ("text", "columns", "sparse", "small print", "faint", "table", "figure")
PAGES = 2 * len(PAGE_STYLES)
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


def render_page(rng: np.random.Generator, style: str) -> np.ndarray:
    """One upright document page of ``style`` (see PAGE_STYLES), drawn at twice the saved size."""
    size = PAGE_SIZE * 2
    page = paper(rng, size, size)
    ink = tuple(int(v) for v in rng.integers(0, 60 if style != "faint" else 150, 3))
    font = FONTS[rng.integers(0, len(FONTS))]
    scale = rng.uniform(0.55, 0.8) if font != cv2.FONT_HERSHEY_PLAIN else rng.uniform(1.0, 1.4)
    scale *= 0.6 if style == "small print" else 1.0
    thick = int(rng.integers(1, 3)) if style != "small print" else 1
    margin = int(rng.integers(20, 40))
    y = title(rng, page, margin, font, scale, thick, ink)
    if style == "table":
        y = table(rng, page, margin, y, font, scale, ink)
    elif style == "figure":
        y = figure(rng, page, margin, y, font, scale, ink)
    columns = 2 if style == "columns" else 1
    last = y + 3 * line_height(font, scale, thick) if style == "sparse" else size - margin
    paragraphs(rng, page, (margin, y, size - margin, last), columns, font, scale, thick, ink)
    return finish(rng, page, (PAGE_SIZE, PAGE_SIZE))


def line_height(font: int, scale: float, thick: int) -> int:
    return cv2.getTextSize("Hg", font, scale, thick)[0][1] * 2 + 4


def title(rng: np.random.Generator, page: np.ndarray, margin: int, font, scale, thick, ink) -> int:
    """A coloured header bar with the title in white, or a bold title; returns the y below it."""
    if rng.random() < 0.4:
        bar = int(rng.integers(40, 60))
        colour = tuple(int(v) for v in rng.integers(40, 160, 3))
        cv2.rectangle(page, (0, 0), (page.shape[1], bar), colour, -1)
        cv2.putText(page, sentence(rng, 3), (margin, bar - 14), font, scale * 1.2, (255, 255, 255), 2)
        return bar + 30
    y = margin + 30
    cv2.putText(page, sentence(rng, 3), (margin, y), font, scale * 1.5, ink, thick + 1)
    return y + 20


def paragraphs(rng, page, box: tuple[int, int, int, int], columns: int, font, scale, thick, ink) -> None:
    """Left-aligned paragraphs (first lines sometimes indented) filling ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    gap = 24
    col_width = (x1 - x0 - (columns - 1) * gap) // columns
    step = line_height(font, scale, thick)
    for column in range(columns):
        x = x0 + column * (col_width + gap)
        y = y0 + step
        while y < y1:
            lines = int(rng.integers(2, 6))
            for i in range(lines):
                if y >= y1:
                    break
                width = col_width if i < lines - 1 else int(col_width * rng.uniform(0.3, 0.9))
                indent = 16 if i == 0 and rng.random() < 0.5 else 0
                text = fit_words(rng, width - indent, font, scale, thick)
                cv2.putText(page, text, (x + indent, y), font, scale, ink, thick, cv2.LINE_AA)
                y += step
            y += step // 2  # paragraph gap
            if columns == 1 and rng.random() < 0.15:  # a rule
                cv2.line(page, (x, y - step // 2), (x + col_width, y - step // 2), ink, 1)


def table(rng, page, margin: int, y: int, font, scale, ink) -> int:
    """A ruled table of words and numbers; returns the y below it."""
    rows, cols = int(rng.integers(4, 7)), int(rng.integers(3, 5))
    width = page.shape[1] - 2 * margin
    cell_w, cell_h = width // cols, int(line_height(font, scale * 0.8, 1) * 1.2)
    for r in range(rows + 1):
        cv2.line(page, (margin, y + r * cell_h), (margin + cols * cell_w, y + r * cell_h), ink, 1)
    for c in range(cols + 1):
        cv2.line(page, (margin + c * cell_w, y), (margin + c * cell_w, y + rows * cell_h), ink, 1)
    for r in range(rows):
        for c in range(cols):
            text = WORDS[rng.integers(0, len(WORDS))] if c == 0 or r == 0 else f"{rng.uniform(0, 999):.2f}"
            origin = (margin + c * cell_w + 6, y + (r + 1) * cell_h - cell_h // 3)
            cv2.putText(page, text, origin, font, scale * 0.8, ink, 1, cv2.LINE_AA)
    return y + rows * cell_h + 10


def figure(rng, page, margin: int, y: int, font, scale, ink) -> int:
    """A bar chart in a frame with a caption below; returns the y below the caption."""
    width, height = page.shape[1] - 2 * margin, int(rng.integers(120, 180))
    cv2.rectangle(page, (margin, y), (margin + width, y + height), ink, 1)
    bars = int(rng.integers(4, 9))
    colour = tuple(int(v) for v in rng.integers(60, 200, 3))
    for b in range(bars):
        top = y + int(height * rng.uniform(0.15, 0.8))
        left = margin + 15 + b * (width - 30) // bars
        cv2.rectangle(page, (left, top), (left + (width - 30) // bars - 8, y + height - 6), colour, -1)
    caption = "Figure " + str(int(rng.integers(1, 9))) + ": " + sentence(rng, 4).lower()
    cv2.putText(page, caption, (margin, y + height + 24), font, scale * 0.8, ink, 1, cv2.LINE_AA)
    return y + height + 24


def orientation_of(page: np.ndarray, angle: str) -> np.ndarray:
    """``page`` rotated by ``angle`` degrees clockwise (cv2.ROTATE_90_CLOCKWISE for "90").

    Clockwise is the model's convention: its float top-1 is "90" for a page turned a quarter
    clockwise and "270" for one turned counter-clockwise (measured on these pages; the other
    direction scored 0 % on both classes).
    """
    return np.ascontiguousarray(np.rot90(page, -ORIENTATIONS.index(angle)))


#: Letters that turned 180 degrees look like a letter again (u/n, d/p, b/q, o, s, x, z, l).
ROTATABLE = set("bdlnopqsuxzHINOSXZ")


def turns_into_letters(text: str) -> bool:
    """True when most letters of ``text`` read as letters upside down ("under on" turns into
    "uo ɹǝpun"): such a line is ambiguous by construction, so it is not used."""
    letters = [c for c in text if c.isalpha()]
    return sum(c in ROTATABLE for c in letters) > len(letters) / 2


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
    while True:
        text = fit_words(rng, int(width * rng.uniform(0.8, 0.95)) - left, font, scale, thick)
        if not turns_into_letters(text):
            break
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
        page = render_page(rng, PAGE_STYLES[index % len(PAGE_STYLES)])
        for angle in ORIENTATIONS:
            write(out / "orientation" / angle / f"page{index:02d}.jpg", orientation_of(page, angle))
    rng = np.random.default_rng(SEED + 1)  # its own stream: a change to the pages keeps the lines
    for index in range(LINES):
        line = render_line(rng)
        write(out / "textline" / "0" / f"line{index:02d}.jpg", line)
        write(out / "textline" / "180" / f"line{index:02d}.jpg", np.ascontiguousarray(line[::-1, ::-1]))
    print(f"{PAGES * len(ORIENTATIONS)} pages in orientation/, {LINES * 2} lines in textline/")


if __name__ == "__main__":
    main()
