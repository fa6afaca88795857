"""ImageFolder: your own images, with or without factors.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factordiff.data.imagefolder import ImageFolder
from factordiff.errors import DatasetError


def _png(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels)
    (img.convert(mode) if mode else img).save(path)


def _colour(i: int) -> np.ndarray:
    return np.full((8, 6, 3), (10 * i, 255 - 10 * i, 7), dtype=np.uint8)


def test_imagefolder_without_csv(tmp_path: Path) -> None:
    _png(tmp_path / "b" / "x.png", _colour(2))
    _png(tmp_path / "a.png", _colour(1))
    _png(tmp_path / "c" / "gray.png", np.full((8, 6), 99, np.uint8))
    rgba = np.dstack([_colour(3), np.zeros((8, 6), np.uint8)])
    _png(tmp_path / "d.PNG", rgba)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = ImageFolder(tmp_path)
    assert not ds.has_ground_truth and ds.factor_names == ("index",)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.files] == [
        "a.png",
        "b/x.png",
        "c/gray.png",
        "d.PNG",
    ]
    images = ds.images_at([0, 1, 2, 3])
    assert images.shape == (4, 8, 6, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0], _colour(1))
    np.testing.assert_array_equal(images[2], np.full((8, 6, 3), 99))
    np.testing.assert_array_equal(images[3], _colour(3))  # alpha dropped, not composited


def test_imagefolder_full_grid_csv(tmp_path: Path) -> None:
    rows = []
    combos = [(a, b) for a in (20, 10) for b in (5, -1, 0)]  # not in sorted order
    for k, (a, b) in enumerate(combos):
        _png(tmp_path / f"img{k}.png", _colour(k))
        rows.append(f"img{k}.png,{a},{b}")
    (tmp_path / "factors.csv").write_text("file,size,pos\n" + "\n".join(rows) + "\n")
    ds = ImageFolder(tmp_path)
    assert ds.is_grid and ds.has_ground_truth
    assert ds.factor_names == ("size", "pos") and ds.factor_sizes == (2, 3)
    assert [v.tolist() for v in ds.factor_values] == [[10, 20], [-1, 0, 5]]
    # Class (1, 2) = size 20, pos 5 = img0; index 5 in C order.
    np.testing.assert_array_equal(ds.images(np.array([[1, 2]]))[0], _colour(0))
    np.testing.assert_array_equal(ds.images_at([0])[0], _colour(combos.index((10, -1))))
    np.testing.assert_array_equal(ds.factors_to_index(np.array([[1, 2]])), [5])


def test_imagefolder_partial_grid_csv(tmp_path: Path) -> None:
    combos = [(0, 0), (0, 1), (1, 1), (2, 0)]
    for k in range(len(combos)):
        _png(tmp_path / "img" / f"{k}.png", _colour(k))
    text = "file,a,b\n" + "".join(f"img/{k}.png,{a},{b}\n" for k, (a, b) in enumerate(combos))
    (tmp_path / "factors.csv").write_text(text)
    ds = ImageFolder(tmp_path)
    assert not ds.is_grid and len(ds) == 4 and ds.factor_sizes == (3, 2)
    np.testing.assert_array_equal(
        ds.images(np.array([[1, 1], [0, 0]]))[:, 0, 0], [_colour(2)[0, 0], _colour(0)[0, 0]]
    )
    np.testing.assert_array_equal(ds.index_to_factors([3, 1]), [[2, 0], [0, 1]])
    np.testing.assert_array_equal(ds.factors_to_index(np.array(combos)), [0, 1, 2, 3])
    with pytest.raises(DatasetError, match=r"no image .* \(a=1, b=0\)"):
        ds.images(np.array([[1, 0]]))
    sampled = ds.sample_factors(200, np.random.RandomState(0))
    assert {tuple(f) for f in sampled.tolist()} == set(combos)


def test_imagefolder_sizes(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", _colour(1))
    _png(tmp_path / "b.jpg", np.zeros((10, 10, 3), np.uint8))
    ds = ImageFolder(tmp_path)
    with pytest.raises(DatasetError, match=r"b.jpg: image is 10x10, expected 6x8 .*image_size"):
        ds.images_at([1])
    resized = ImageFolder(tmp_path, image_size=4)
    assert resized.images_at([0, 1]).shape == (2, 4, 4, 3)
    assert ImageFolder(tmp_path, image_size=(5, 7)).images_at([1]).shape == (1, 5, 7, 3)
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="c.png: not a readable image"):
        ImageFolder(tmp_path).images_at([2])


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("name,a\na.png,1\n", "no `file` column"),
        ("file,a\na.png,1.5\n", "line 2, column 'a': '1.5' is not an integer"),
        ("file,a,b\na.png,1,2\nb.png,x,2\n", "line 3, column 'a': 'x' is not an integer"),
        ("file,a\nmissing.png,1\n", "line 2: listed file missing.png not found"),
        ("file,a\na.png,1\nb.png,1\n", "have the same factors (a=1)"),
        ("file\na.png\n", "only a `file` column"),
        ("file,a\na.png,1,2\n", "line 2: expected 2 fields, got 3"),
        ("file,a\n", "no rows"),
    ],
)
def test_imagefolder_bad_csv(tmp_path: Path, csv: str, message: str) -> None:
    _png(tmp_path / "a.png", _colour(1))
    _png(tmp_path / "b.png", _colour(2))
    (tmp_path / "factors.csv").write_text(csv)
    with pytest.raises(DatasetError, match="factors.csv") as err:
        ImageFolder(tmp_path)
    assert message in str(err.value)


def test_imagefolder_no_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(DatasetError, match="no images found"):
        ImageFolder(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        ImageFolder(tmp_path / "absent")
