import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.datasets import ZOO, datasets_dir, zoo_entry
from workbench.errors import DatasetError, ZooError
from workbench.task.labels import LabelledSet, check_matches, default_labelled_set, load_labelled


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")


# ---------------------------------------------------------------------- formats
def test_class_folders_sort_numerically_and_interleave(tmp_path):
    for angle in ("270", "0", "180", "90", "-90", "x"):
        _touch(tmp_path, f"{angle}/a.jpg", f"{angle}/b.png")
    _touch(tmp_path, ".ipynb_checkpoints/c.jpg", "notes/readme.txt")
    labelled = load_labelled(tmp_path)
    classes = ["-90", "0", "90", "180", "270", "x"]
    assert labelled.kind == "classes" and len(labelled) == 12 and labelled.class_names == classes
    assert labelled.labels == classes * 2
    first = [r[0].relative_to(tmp_path).as_posix() for r in labelled.samples.rows[:2]]
    assert first == ["-90/a.jpg", "0/a.jpg"]
    head = labelled.head(6)
    assert head.labels == classes and head.class_names == classes


def test_plain_folder_is_unlabelled(tmp_path):
    _touch(tmp_path, "b.jpg", "a.npy", "notes.txt")
    labelled = load_labelled(tmp_path)
    assert (labelled.kind, labelled.labels, len(labelled)) == ("folder", None, 2)
    assert labelled.head(1).labels is None


def test_csv_with_and_without_header(tmp_path):
    _touch(tmp_path, "img/a.jpg", "img/b.jpg")
    (tmp_path / "labels.csv").write_text('path,label\nimg/a.jpg,cat\n\nimg/b.jpg,"3, quoted"\n')
    labelled = load_labelled(tmp_path / "labels.csv")
    assert labelled.kind == "csv" and labelled.labels == ["cat", "3, quoted"]
    assert labelled.samples.rows == [
        ((tmp_path / "img/a.jpg").resolve(),),
        ((tmp_path / "img/b.jpg").resolve(),),
    ]
    assert labelled.samples.where(1).endswith("labels.csv line 4")
    (tmp_path / "bare.csv").write_text("img/b.jpg,1\n")
    assert load_labelled(tmp_path / "bare.csv").labels == ["1"]
    (tmp_path / "other.csv").write_text(
        "\ufeffimage_file,class\nimg/a.jpg,dog\n", encoding="utf-8"
    )  # Excel's BOM
    assert load_labelled(tmp_path / "other.csv").labels == ["dog"]


def test_paddleocr_label_file(tmp_path):
    _touch(tmp_path, "crops/w1.png", "crops/w2.png")
    (tmp_path / "rec_gt.txt").write_text("crops/w1.png\tHello world\ncrops/w2.png\t價格\ttab\n")
    labelled = load_labelled(tmp_path / "rec_gt.txt")
    assert labelled.kind == "paddleocr" and labelled.labels == ["Hello world", "價格\ttab"]
    assert labelled.samples.rows[1] == ((tmp_path / "crops/w2.png").resolve(),)


def test_dataset_txt_is_unlabelled(tmp_path):
    _touch(tmp_path, "a.jpg", "b.jpg")
    (tmp_path / "dataset.txt").write_text("a.jpg\n# comment\nb.jpg\n")
    labelled = load_labelled(tmp_path / "dataset.txt")
    assert (labelled.kind, labelled.labels, len(labelled)) == ("list", None, 2)


def _coco(tmp_path: Path, annotations: list, images_folder: str = "") -> Path:
    _touch(tmp_path, f"{images_folder}one.jpg", f"{images_folder}two.jpg")
    coco = {
        "images": [
            {"id": 7, "file_name": "one.jpg", "width": 640, "height": 480},
            {"id": 9, "file_name": "two.jpg", "width": 320, "height": 200},
        ],
        "annotations": annotations,
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco, indent=1))
    return tmp_path / "instances.json"


def test_coco_boxes_become_xyxy_in_pixels(tmp_path):
    path = _coco(
        tmp_path,
        [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 20, 30, 40.5]},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 640, 480]},
        ],
        images_folder="images/",
    )
    labelled = load_labelled(path)
    assert labelled.kind == "coco" and labelled.class_names == ["person", "dog"]
    first, second = labelled.labels
    np.testing.assert_allclose(first["boxes"], [[10, 20, 40, 60.5], [0, 0, 640, 480]])
    assert (
        first["classes"].tolist() == [18, 1] and first["image_size"] == (640, 480) and first["image_id"] == 7
    )
    assert (
        second["boxes"].shape == (0, 4)
        and second["classes"].shape == (0,)
        and second["image_size"] == (320, 200)
    )
    assert labelled.samples.rows[0] == ((tmp_path / "images/one.jpg").resolve(),)
    assert labelled.coco["categories"][0]["name"] == "dog"
    assert labelled.head(1).coco is labelled.coco


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "name, text, match",
    [
        ("l.csv", "a.jpg,cat\nmissing.jpg,dog\n", r"l.csv line 2 names 'missing.jpg', which does not exist"),
        ("l.csv", "path,label\na.jpg,cat,extra\n", r"l.csv line 2 has 3 column\(s\), expected 2"),
        ("l.csv", "path,label\n", r"l.csv names no samples"),
        ("rec.txt", "a.jpg\tword\na.jpg word\n", r"rec.txt line 2 has no tab"),
        ("rec.txt", "a.jpg\tword\nb.jpg\tword\n", r"rec.txt line 2 names 'b.jpg', which does not exist"),
        ("rec.txt", "a.jpg\t\n", r"rec.txt line 1: no text after the tab"),
        ("list.txt", "a.jpg\nnope.jpg\n", r"list.txt' line 2 names .*nope.jpg"),
        ("list.txt", "\n# only a comment\n", r"names no samples"),
        ("rec.txt", "a.jpg\tok\na.jpg\tbad\x00\n", r"rec.txt line 2 holds a NUL byte"),
        ("l.csv", "a.jpg,ok\n\na.jpg,caf\xe9\n", r"l.csv line 3 is not UTF-8 \(byte 0xe9\)"),
        ("c.json", '{"images": [],\n "annotations": [,]}', r"c.json line 2 is not valid JSON"),
        ("c.json", '{"images": []}', r"not a COCO detection file: no list of annotations, categories"),
        ("c.json", '{"images": [], "annotations": [], "categories": []}', r"c.json names no samples"),
        ("labels.xlsx", "", r"labels.xlsx' names no samples"),
    ],
)
def test_bad_label_files_name_the_line(tmp_path, name, text, match):
    _touch(tmp_path, "a.jpg")
    (tmp_path / name).write_bytes(text.encode("latin-1") if "\xe9" in text else text.encode())
    with pytest.raises(DatasetError, match=match):
        load_labelled(tmp_path / name)


def test_coco_annotation_naming_unknown_image(tmp_path):
    good = {"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1]}
    path = _coco(tmp_path, [good, {**good, "id": 2, "image_id": 99}])
    line = next(n for n, t in enumerate(path.read_text().splitlines(), 1) if '"image_id": 99' in t)
    with pytest.raises(
        DatasetError, match=rf"line {line} \(annotations\[1\]\) names image_id 99, which is not in"
    ):
        load_labelled(path)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"category_id": 5}, r"annotations\[0\]\) names category_id 5, which is not in categories \(18, 1\)"),
        ({"bbox": [0, 0, -1, 2]}, r"annotations\[0\]\): bbox \[0, 0, -1, 2\] is not \[x, y, width, height\]"),
        ({"bbox": [0, "a", 1, 2]}, r"bbox \[0, 'a', 1, 2\] is not"),
        ({"category_id": [1]}, r"names category_id \[1\], which is not in categories"),
    ],
)
def test_coco_bad_annotations(tmp_path, change, match):
    path = _coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], **change}])
    with pytest.raises(DatasetError, match=match):
        load_labelled(path)


def test_coco_missing_image_names_its_entry(tmp_path):
    path = _coco(tmp_path, [])
    (tmp_path / "two.jpg").unlink()
    with pytest.raises(
        DatasetError, match=r"instances.json line \d+ \(images\[1\]\) names 'two.jpg'.*images/ folder"
    ):
        load_labelled(path)


def test_folder_mistakes(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_labelled(tmp_path / "nope")
    with pytest.raises(DatasetError, match="holds no images"):
        load_labelled(tmp_path)
    _touch(tmp_path, "cat/a.jpg", "stray.jpg")
    with pytest.raises(
        DatasetError, match=r"class folders \(cat\) and also 1 sample\(s\) outside them .*'stray.jpg'"
    ):
        load_labelled(tmp_path)
    with pytest.raises(DatasetError, match="is a single sample"):
        load_labelled(tmp_path / "stray.jpg")
    with pytest.raises(DatasetError, match="-1 samples"):
        load_labelled(tmp_path / "cat").head(-1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(alphabet=st.sampled_from('a.jpg,\t\n"#x\x00é{}[]:'), max_size=40),
    name=st.sampled_from(["f.csv", "f.txt", "f.json"]),
)
def test_any_label_file_loads_or_explains(tmp_path, text, name):
    _touch(tmp_path, "a.jpg")
    (tmp_path / name).write_text(text, encoding="utf-8")
    try:
        labelled = load_labelled(tmp_path / name)
    except DatasetError as err:
        assert name in str(err)
    else:
        assert len(labelled) > 0 and (labelled.labels is None or len(labelled.labels) == len(labelled))


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 10)
    | st.floats(allow_nan=True)
    | st.sampled_from(["a.jpg", "x"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["id", "file_name", "width", "height", "image_id", "category_id", "bbox", "name"]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(coco=st.dictionaries(st.sampled_from(["images", "annotations", "categories"]), _json))
def test_any_coco_json_loads_or_explains(tmp_path, coco):
    _touch(tmp_path, "a.jpg")
    (tmp_path / "c.json").write_text(json.dumps(coco))
    try:
        labelled = load_labelled(tmp_path / "c.json")
    except DatasetError as err:
        assert "c.json" in str(err)
    else:
        assert all(label["boxes"].shape[1] == 4 for label in labelled.labels)


# ---------------------------------------------------------------------- labels fit the task
def test_check_matches_names_the_label_and_line(tmp_path):
    _touch(tmp_path, "a.jpg")
    (tmp_path / "l.csv").write_text("a.jpg,0\na.jpg,cat\na.jpg,45\n")
    labelled = load_labelled(tmp_path / "l.csv")
    check_matches(labelled.head(2), "classification", ["dog", "cat"])  # index 0, name cat
    with pytest.raises(
        DatasetError, match=r"l.csv line 3: label '45' is not in the model's 2 classes \('dog', 'cat'\)"
    ):
        check_matches(labelled, "classification", ["dog", "cat"])
    with pytest.raises(DatasetError, match=r"csv labels do not fit the 'detection' task, which takes coco"):
        check_matches(labelled, "detection")
    check_matches(load_labelled(tmp_path), "detection")  # an unlabelled folder fits any task


def test_check_matches_ctc_dictionary(tmp_path):
    _touch(tmp_path, "a.jpg")
    (tmp_path / "rec.txt").write_text("a.jpg\tab\na.jpg\tabz\n")
    labelled = load_labelled(tmp_path / "rec.txt")
    check_matches(labelled.head(1), "ctc", list("abc"))
    with pytest.raises(
        DatasetError, match=r"rec.txt line 2: character 'z' of 'abz' is not in the model's 3 dictionary"
    ):
        check_matches(labelled, "ctc", list("abc"))
    with pytest.raises(DatasetError, match="paddleocr labels do not fit the 'classification' task"):
        check_matches(labelled, "classification", ["0", "180"])


# ---------------------------------------------------------------------- the zoo's sets
@pytest.mark.parametrize(
    "name, count, classes",
    [("lcnet-orientation", 56, ["0", "90", "180", "270"]), ("ppocr-cls", 32, ["0", "180"])],
)
def test_zoo_classification_sets(name, count, classes):
    labelled = default_labelled_set(name)
    assert (
        len(labelled) == count and labelled.class_names == classes == zoo_entry(name).task_settings["classes"]
    )
    assert all(labelled.labels.count(c) == count // len(classes) for c in classes)
    assert sorted(labelled.head(len(classes)).labels) == sorted(classes)
    check_matches(labelled, zoo_entry(name).task, classes)


def test_zoo_detection_set_is_unlabelled_photographs():
    labelled = default_labelled_set("yolov8n")
    assert (labelled.kind, labelled.labels, len(labelled)) == ("list", None, 12)
    assert labelled.source == datasets_dir() / "dataset.txt"


def test_every_zoo_entry_names_an_adapter_and_a_set(monkeypatch):
    assert {name: e.task for name, e in ZOO.items()} == {
        "lcnet-orientation": "classification",
        "ppocr-cls": "classification",
        "yolov8n": "detection",
    }
    monkeypatch.setitem(ZOO, "bare", zoo_entry("yolov8n").__class__("bare", "p", "m", "0", "x", (1,), None))
    assert ZOO["bare"].task == "outputs" and ZOO["bare"].labelled is None
    with pytest.raises(ZooError, match="'bare' has no bundled labelled set"):
        default_labelled_set("bare")


def _float_top1(name: str, labelled: LabelledSet, zoo) -> list[str]:
    from workbench.runners.float import FloatRunner

    model = zoo(name)
    runner = FloatRunner(model, zoo_entry(name).preprocess, keep=list(model.outputs))
    (output,) = model.outputs
    classes = zoo_entry(name).task_settings["classes"]
    return [classes[int(np.argmax(runner.run(row)[output]))] for row in labelled.samples.rows]


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["lcnet-orientation", "ppocr-cls"])
def test_float_model_reads_the_generated_labels(name, zoo):
    # The labels are known by construction; the float model must agree, or the rotation
    # convention (90 = clockwise) or the rendering went wrong.
    full = default_labelled_set(name)
    # About 8 samples spread over the pages (an odd step crosses the interleaved classes).
    labelled = full.take(range(0, len(full), len(full) // 8 | 1))
    assert len(set(labelled.labels)) == len(full.class_names)
    predicted = _float_top1(name, labelled, zoo)
    right = sum(p == label for p, label in zip(predicted, labelled.labels))
    assert right / len(labelled) >= 0.9, list(zip(labelled.labels, predicted))


@pytest.mark.zoo
def test_orientation_classes_are_the_models_own(zoo):
    stored = {p.key: p.value for p in zoo("lcnet-orientation").proto.metadata_props}
    assert stored["character"].split("\n") == zoo_entry("lcnet-orientation").task_settings["classes"]
