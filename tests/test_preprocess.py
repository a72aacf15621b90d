import cv2
import numpy as np
import pytest

from workbench.errors import DatasetError
from workbench.preprocess import Preprocess, channel_axis, load_sample


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "p.png"
    cv2.imwrite(str(path), bgr)
    return path, bgr


def test_image_is_rgb_resized_normalised_nchw(photo):
    path, bgr = photo
    x = load_sample(path, (1, 3, 10, 15), Preprocess((1, 2, 3), (2, 4, 8)))
    rgb = cv2.resize(bgr[..., ::-1], (15, 10), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected = ((rgb - [1, 2, 3]) / [2, 4, 8]).transpose(2, 0, 1)[None]
    assert x.shape == (1, 3, 10, 15) and x.dtype == np.float32
    np.testing.assert_allclose(x, expected, rtol=1e-6)


def test_rgb2bgr_keeps_opencv_order(photo):
    path, bgr = photo
    x = load_sample(path, (1, 3, 20, 30), Preprocess(rgb2bgr=True))
    np.testing.assert_array_equal(x[0].transpose(1, 2, 0), bgr.astype(np.float32))


def test_nhwc_input_layout(photo):
    path, bgr = photo
    x = load_sample(path, (1, 20, 30, 3), Preprocess(mean=(0, 0, 100)))
    assert x.shape == (1, 20, 30, 3)
    np.testing.assert_array_equal(x[0, ..., 2], bgr[..., 0].astype(np.float32) - 100)
    assert channel_axis((1, 224, 224, 3)) == 3 and channel_axis((1, 3, 224, 224)) == 1


def test_npy_is_normalised_never_swapped(tmp_path):
    raw = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 3, 2, 4)
    np.save(tmp_path / "a.npy", raw)
    x = load_sample(tmp_path / "a.npy", (1, 3, 2, 4), Preprocess((1, 2, 3), (1, 1, 2), rgb2bgr=True))
    np.testing.assert_allclose(
        x, (raw - np.array([1, 2, 3]).reshape(1, 3, 1, 1)) / np.array([1, 1, 2]).reshape(1, 3, 1, 1)
    )


def test_npy_wrong_shape_is_explained(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(DatasetError, match="a.npy.*\\(1, 8, 8, 3\\).*\\(1, 3, 8, 8\\)"):
        load_sample(tmp_path / "a.npy", (1, 3, 8, 8), Preprocess())


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("missing.png", None, "does not exist"),
        ("broken.jpg", b"not really a jpeg", "cannot decode"),
        ("notes.txt", b"hello", "unsupported file type"),
    ],
)
def test_bad_sample_files(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match=match):
        load_sample(path, (1, 3, 8, 8), Preprocess())


def test_mean_length_must_fit_channels(photo):
    with pytest.raises(DatasetError, match="2 mean/std values.*3 channels"):
        load_sample(photo[0], (1, 3, 8, 8), Preprocess(mean=(1, 2)))


def test_zero_std_and_non_numbers_refused():
    with pytest.raises(DatasetError, match="std"):
        Preprocess(std=(1, 0, 1))
    with pytest.raises(DatasetError, match="mean"):
        Preprocess(mean=("a", 1, 2))
    assert Preprocess(mean=127.5).mean == (127.5,)
