"""Labelled samples: the inputs to judge a model's answers on, with the right answers if known.

``load_labelled(path)`` reads, by what ``path`` is:

- a folder whose subfolders hold the images: one class per subfolder (the label is the
  folder's name, e.g. ``orientation/90/page01.jpg``);
- a folder of images: unlabelled (only agreement with float can be judged);
- ``*.csv``: ``path,label`` rows, an optional header, paths relative to the CSV; the label
  is kept as text (a class name, a class index or a transcription; the adapter maps it);
- ``*.json``: COCO detection (``images``, ``annotations``, ``categories``);
- any other text file: a PaddleOCR recognition label file (``path<TAB>text`` per line) when
  its first line holds a tab, else a toolkit dataset.txt (unlabelled).

Every bad input raises DatasetError naming the file and the line (or COCO entry).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.datasets import CalibrationSet, datasets_dir, zoo_entry
from workbench.errors import DatasetError, ZooError
from workbench.preprocess import IMAGE_SUFFIXES

_SAMPLE_SUFFIXES = (*IMAGE_SUFFIXES, ".npy")
#: Cells that mark the first CSV row as a header (first column or second) rather than a sample.
_CSV_HEADERS = {"path", "file", "filename", "file_name", "image", "image_path", "img", "sample"}
_CSV_LABEL_HEADERS = {"label", "class", "class_name", "category", "text", "transcription"}
_FORMATS = (
    "a folder of class folders, a folder of images, a CSV, a COCO .json, a PaddleOCR label file "
    "or a dataset.txt"
)


@dataclass
class LabelledSet:
    """Samples and, when known, the right answer for each.

    ``samples.where(i)`` says where sample ``i`` came from (the label file and line, or the
    image), for messages about it.
    """

    samples: CalibrationSet  #: one row of files (one per model input) per sample
    labels: list | None  #: one per row (str, or a dict for COCO); None when unlabelled
    source: Path  #: the folder or file it was read from
    kind: str  #: "classes", "csv", "coco", "paddleocr", "list" or "folder"
    #: class folders (numeric names in numeric order), or COCO category names in id order
    class_names: list[str] | None = None
    coco: dict | None = None  #: the COCO json as read, for pycocotools

    def __len__(self) -> int:
        return len(self.samples)

    def take(self, indices: Iterable[int]) -> LabelledSet:
        """The samples at ``indices``, in that order (e.g. a held-out split)."""
        indices = list(indices)
        lines = self.samples.lines
        samples = CalibrationSet(
            [self.samples.rows[i] for i in indices],
            self.samples.source,
            [lines[i] for i in indices] if lines else None,
        )
        labels = None if self.labels is None else [self.labels[i] for i in indices]
        return LabelledSet(samples, labels, self.source, self.kind, self.class_names, self.coco)

    def head(self, n: int) -> LabelledSet:
        """The first ``n`` samples. Class folders are read interleaved, so a head keeps every class."""
        if n < 0:
            raise DatasetError(f"Cannot take {n} samples: give a count of 0 or more.")
        return self.take(range(min(n, len(self))))


def load_labelled(path: str | Path) -> LabelledSet:
    """Read labelled (or unlabelled) samples, detecting the format from ``path`` (see the module).

    Raises:
        DatasetError: the path does not exist, names no sample, or a file/line is bad
            (missing image, malformed row, NUL byte, not UTF-8); the message names the line.
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not path.is_file():
        raise DatasetError(f"Labelled data {str(path)!r} does not exist. Give {_FORMATS}.")
    if path.suffix.lower() in _SAMPLE_SUFFIXES:
        raise DatasetError(
            f"{str(path)!r} is a single sample, not a data set. Give its folder, or {_FORMATS}."
        )
    text = _read_text(path)
    if path.suffix.lower() == ".csv":
        return _load_csv(path, text)
    if path.suffix.lower() == ".json":
        return _load_coco(path, text)
    first = next((line for line in text.splitlines() if line.strip()), "")
    if "\t" in first:
        return _load_paddleocr(path, text)
    samples = CalibrationSet.from_list(path)
    return LabelledSet(samples, None, path, "list")


def default_labelled_set(name: str) -> LabelledSet:
    """The labelled set bundled for zoo model ``name`` (``ZooEntry.labelled`` under datasets/).

    Raises:
        ZooError: unknown model, or the entry names no labelled set.
    """
    entry = zoo_entry(name)
    if entry.labelled is None:
        raise ZooError(f"Zoo model {name!r} has no bundled labelled set; pass your own data (--data).")
    return load_labelled(datasets_dir() / entry.labelled)


def check_matches(labelled: LabelledSet, task: str, classes: Sequence[str] | None = None) -> None:
    """Check that ``labelled``'s labels fit ``task`` before any model runs.

    Args:
        labelled: the set to check; an unlabelled set always fits (agreement only).
        task: the adapter's name: "classification", "detection" or "ctc" are checked.
        classes: the model's class names (classification: a label is a name or an index
            into them) or its character dictionary (ctc: every character of a label in it).

    Raises:
        DatasetError: naming the first label that does not fit, where it is, and what fits.
    """
    if labelled.labels is None:
        return
    wanted = {"classification": ("classes", "csv"), "detection": ("coco",), "ctc": ("paddleocr", "csv")}
    if task in wanted and labelled.kind not in wanted[task]:
        raise DatasetError(
            f"{labelled.source}: {labelled.kind} labels do not fit the {task!r} task, which takes "
            f"{' or '.join(wanted[task])} labels. Pass data labelled for this task, or pick another --task."
        )
    if classes is None or task not in ("classification", "ctc"):
        return
    classes = [str(c) for c in classes]
    known = set(classes)
    for index, label in enumerate(labelled.labels):
        if task == "classification":
            bad = None if label in known or _is_index(label, len(classes)) else label
            what = f"label {label!r}"
        else:
            bad = next((c for c in label if c not in known), None)
            what = f"character {bad!r} of {label!r}"
        if bad is not None:
            shown = ", ".join(repr(c) for c in classes[:20]) + (" ..." if len(classes) > 20 else "")
            kind = "classes" if task == "classification" else "dictionary"
            raise DatasetError(
                f"{labelled.samples.where(index)}: {what} is not in the model's {len(classes)} "
                f"{kind} ({shown}). Fix the label, or give the model's {kind} in the task settings."
            )


# ---------------------------------------------------------------------- formats
def _load_folder(folder: Path) -> LabelledSet:
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    classes = {p.name: _samples_in(p) for p in subfolders}
    classes = {name: files for name, files in classes.items() if files}
    if not classes:
        samples = CalibrationSet.from_folder(folder)
        return LabelledSet(samples, None, folder, "folder")
    loose = _samples_in(folder)
    if loose:
        raise DatasetError(
            f"{str(folder)!r} holds class folders ({', '.join(sorted(classes))}) and also "
            f"{len(loose)} sample(s) outside them (e.g. {loose[0].name!r}): move each into its class folder."
        )
    names = sorted(classes, key=_class_order)
    # Interleaved (one of each class in turn), so that head(n) and --samples keep every class.
    rows, labels = [], []
    for rank in range(max(len(files) for files in classes.values())):
        for name in names:
            if rank < len(classes[name]):
                rows.append((classes[name][rank].resolve(),))
                labels.append(name)
    return LabelledSet(CalibrationSet(rows, folder), labels, folder, "classes", names)


def _load_csv(path: Path, text: str) -> LabelledSet:
    rows, labels, lines = [], [], []
    reader = csv.reader(io.StringIO(text, newline=""))
    for record in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if not rows and number == first_line(text) and _is_header(record):
            continue
        if len(record) != 2:
            raise DatasetError(
                f"{path} line {number} has {len(record)} column(s), expected 2: path,label "
                "(quote a label that holds a comma)."
            )
        rows.append((_sample(path, record[0].strip(), f"{path} line {number}"),))
        labels.append(record[1].strip())
        lines.append(number)
    _not_empty(rows, path)
    return LabelledSet(CalibrationSet(rows, path, lines), labels, path, "csv")


def _load_paddleocr(path: Path, text: str) -> LabelledSet:
    rows, labels, lines = [], [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DatasetError(
                f"{path} line {number} has no tab: a PaddleOCR label file holds `path<TAB>text` "
                f"per line, got {line[:60]!r}."
            )
        file, label = line.split("\t", 1)
        if not label:
            raise DatasetError(f"{path} line {number}: no text after the tab for {file!r}.")
        rows.append((_sample(path, file, f"{path} line {number}"),))
        labels.append(label)
        lines.append(number)
    _not_empty(rows, path)
    return LabelledSet(CalibrationSet(rows, path, lines), labels, path, "paddleocr")


def _load_coco(path: Path, text: str) -> LabelledSet:
    try:
        coco = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} line {err.lineno} is not valid JSON: {err.msg}.") from None
    keys = ("images", "annotations", "categories")
    missing = [k for k in keys if not isinstance(coco, dict) or not isinstance(coco.get(k), list)]
    if missing:
        raise DatasetError(
            f"{path} is not a COCO detection file: no list of {', '.join(missing)}. A COCO file holds "
            '{"images": [...], "annotations": [...], "categories": [...]}.'
        )
    images = _coco_images(path, text, coco["images"])
    categories = _coco_categories(path, coco["categories"])
    _coco_boxes(path, text, coco["annotations"], images, categories)
    _not_empty(list(images), path)
    labels = [
        {
            "boxes": np.asarray(image["boxes"], np.float64).reshape(-1, 4),
            "classes": np.asarray(image["classes"], np.int64),
            "image_size": image["size"],
            "image_id": image_id,
        }
        for image_id, image in images.items()
    ]
    samples = CalibrationSet([(image["file"],) for image in images.values()], path)
    names = [categories[c] for c in sorted(categories, key=lambda c: _class_order(str(c)))]
    return LabelledSet(samples, labels, path, "coco", names, coco)


def _coco_categories(path: Path, entries: list) -> dict[int, str]:
    """{category id: name}; ids must be integers (the labels' "classes" hold them)."""
    categories = {}
    for k, category in enumerate(entries):
        if not isinstance(category, dict) or not _is_number(category.get("id")) or category["id"] % 1:
            raise DatasetError(f"{path} categories[{k}]: {category!r} needs an integer id (and a name).")
        categories[int(category["id"])] = str(category.get("name", category["id"]))
    return categories


def _coco_images(path: Path, text: str, entries: list) -> dict:
    """{image id: {"file", "size", "boxes": [], "classes": []}}; files relative to the json's
    folder or its images/ folder."""
    folders = [path.parent, path.parent / "images"]
    lines = _json_lines(text, "file_name", len(entries))
    images = {}
    for k, image in enumerate(entries):
        where = _entry(path, lines, k, "images")
        try:
            image_id, name = image["id"], str(image["file_name"])
            size = (int(image["width"]), int(image["height"]))
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{where}: an image needs id, file_name, width and height.") from None
        if not isinstance(image_id, int | str):
            raise DatasetError(f"{where}: id {image_id!r} is not a number or a string.")
        images[image_id] = {
            "file": _sample(path, name, where, folders),
            "size": size,
            "boxes": [],
            "classes": [],
        }
    return images


def _coco_boxes(path: Path, text: str, entries: list, images: dict, categories: dict) -> None:
    """Add each annotation's box (COCO's xywh turned into xyxy) and category id to its image."""
    lines = _json_lines(text, "image_id", len(entries))
    for k, ann in enumerate(entries):
        where = _entry(path, lines, k, "annotations")
        ann = ann if isinstance(ann, dict) else {}
        image_id, category = ann.get("image_id"), ann.get("category_id")
        if not isinstance(image_id, int | str) or image_id not in images:
            raise DatasetError(
                f"{where} names image_id {image_id!r}, which is not in images: fix the id or add the image."
            )
        if not _is_number(category) or category not in categories:
            raise DatasetError(
                f"{where} names category_id {category!r}, which is not in categories "
                f"({', '.join(str(c) for c in list(categories)[:20])})."
            )
        bbox = ann.get("bbox")
        numbers = isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)
        if not numbers or bbox[2] < 0 or bbox[3] < 0:
            raise DatasetError(
                f"{where}: bbox {bbox!r} is not [x, y, width, height] with width, height >= 0."
            )
        x, y, w, h = (float(v) for v in bbox)
        images[image_id]["boxes"].append((x, y, x + w, y + h))
        images[image_id]["classes"].append(int(category))


# ---------------------------------------------------------------------- helpers
def _read_text(path: Path) -> str:
    """The file as UTF-8 text (a BOM is dropped); NUL bytes or other encodings fail on their line."""
    data = path.read_bytes()
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise DatasetError(
            f"{path} line {line} holds a NUL byte: this is not a text label file (binary, or UTF-16?). "
            "Save it as UTF-8 text."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DatasetError(
            f"{path} line {line} is not UTF-8 (byte 0x{data[err.start]:02x}): save the file as UTF-8."
        ) from None


def _sample(label_file: Path, name: str, where: str, folders: Sequence[Path] = ()) -> Path:
    """The file ``name`` names, relative to the label file's folder (or the first of ``folders``
    that holds it)."""
    candidates = [(folder / name).resolve() for folder in (folders or [label_file.parent])]
    found = next((file for file in candidates if file.is_file()), None)
    if found is None:
        looked = " or ".join(str(file) for file in candidates)
        raise DatasetError(
            f"{where} names {name!r}, which does not exist (looked for {looked}). Paths are "
            "relative to the label file" + (" or its images/ folder." if folders else ".")
        )
    return found


def _samples_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SAMPLE_SUFFIXES)


def _class_order(name: str) -> tuple:
    """Numeric class names ("0", "90", "180", "270") in numeric order, before any other names."""
    if re.fullmatch(r"-?\d+(\.\d+)?", name):
        return (0, float(name), name)
    return (1, 0.0, name)


def _is_header(record: list[str]) -> bool:
    cells = [cell.strip().lower() for cell in record]
    return cells[0] in _CSV_HEADERS or (len(cells) > 1 and cells[1] in _CSV_LABEL_HEADERS)


def _is_index(label: str, count: int) -> bool:
    return label.isdigit() and int(label) < count


def first_line(text: str) -> int:
    return next((n for n, line in enumerate(text.splitlines(), 1) if line.strip()), 1)


def _json_lines(text: str, key: str, count: int) -> list[int]:
    """Line of each ``"key":`` in ``text``: COCO images carry one file_name each, annotations
    one image_id each, so the k-th is the k-th entry's line. Empty unless there are ``count``."""
    lines, last, line = [], 0, 1
    for match in re.finditer(rf'"{key}"\s*:', text):
        line += text.count("\n", last, match.start())
        last = match.start()
        lines.append(line)
    return lines if len(lines) == count else []


def _entry(path: Path, lines: list[int], k: int, array: str) -> str:
    """Where COCO entry ``array[k]`` is: "file line N (annotations[k])"."""
    return f"{path} line {lines[k]} ({array}[{k}])" if lines else f"{path} {array}[{k}]"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _not_empty(rows: list, path: Path) -> None:
    if not rows:
        raise DatasetError(f"{path} names no samples: add at least one.")


_CLOCKWISE = {
    "0": None,
    "90": "ROTATE_90_CLOCKWISE",
    "180": "ROTATE_180",
    "270": "ROTATE_90_COUNTERCLOCKWISE",
}


def rotated_set(images: CalibrationSet, folder: str | Path) -> LabelledSet:
    """Every image of ``images`` turned 0/90/180/270 degrees clockwise, written as class
    folders under ``folder`` (labels known by construction, as the orientation models name
    them), and read back. Existing files there are overwritten, nothing else is touched.

    Raises:
        DatasetError: a sample is not a readable image, or a row has more than one file.
    """
    import cv2

    folder = Path(folder)
    for i, row in enumerate(images.rows):
        if len(row) != 1:
            raise DatasetError(f"{images.where(i)}: rotated_set takes one image per sample, not {len(row)}.")
        image = cv2.imread(str(row[0]), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"{images.where(i)}: {str(row[0])!r} is not an image OpenCV can read.")
        for angle, code in _CLOCKWISE.items():
            (folder / angle).mkdir(parents=True, exist_ok=True)
            turned = image if code is None else cv2.rotate(image, getattr(cv2, code))
            cv2.imwrite(str(folder / angle / f"{i:03d}_{Path(row[0]).stem}.jpg"), turned)
    return load_labelled(folder)
