"""CelebA (img_align_celeba + list_attr_celeba.txt): attributes, crops, splits, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import published_files as pf
from factordiff.data.celeba import CelebA
from factordiff.errors import DatasetError


def _decoded(root: Path, i: int) -> Image.Image:
    with Image.open(root / "img_align_celeba" / f"{i + 1:06d}.jpg") as img:
        return img.convert("RGB")


def test_celeba_attributes_and_crop148(celeba_root: tuple[Path, np.ndarray]) -> None:
    root, attributes = celeba_root
    ds = CelebA(root)
    assert not ds.has_ground_truth and ds.factor_names == ("index",)
    assert len(ds) == 10 and ds.factor_sizes == (10,)
    assert ds.attributes.dtype == np.int8 and ds.attributes.shape == (10, 40)
    np.testing.assert_array_equal(ds.attributes, attributes)
    assert ds.attribute_names[:2] == ("5_o_Clock_Shadow", "Arched_Eyebrows")
    np.testing.assert_array_equal(ds.partition, [0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    images = ds.images_at([3, 0])
    assert images.dtype == np.uint8 and images.shape == (2, 64, 64, 3)
    box = (15, 35, 163, 183)  # 148x148 centre of 178x218
    ref = _decoded(root, 3).crop(box).resize((64, 64), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(images[0], np.asarray(ref))
    centre = np.array(pf.celeba_colours(3)[0])
    assert np.abs(images[0].reshape(-1, 3).mean(0) - centre).max() < 6  # no green border


def test_celeba_resize96crop64_and_splits(celeba_root: tuple[Path, np.ndarray]) -> None:
    root, attributes = celeba_root
    ds = CelebA(root, preprocess="resize96crop64", split="test")
    assert len(ds) == 2 and ds.filenames == ("000009.jpg", "000010.jpg")
    np.testing.assert_array_equal(ds.attributes, attributes[8:])
    ref = _decoded(root, 8).resize((96, 117), Image.Resampling.BILINEAR).crop((16, 26, 80, 90))
    np.testing.assert_array_equal(ds.images_at([0])[0], np.asarray(ref))
    assert len(CelebA(root, split="train")) == 6 and len(CelebA(root, split="valid")) == 2
    assert CelebA(root, image_size=32).images_at([0]).shape == (1, 32, 32, 3)


def test_celeba_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="list_attr_celeba.txt"):
        CelebA(tmp_path)
    pf.write_celeba(tmp_path, n=4, partition=False)
    with pytest.raises(DatasetError, match="preprocess"):
        CelebA(tmp_path, preprocess="crop")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="list_eval_partition.txt"):
        CelebA(tmp_path, split="train")
    attr = tmp_path / "list_attr_celeba.txt"
    good = attr.read_text()
    lines = good.splitlines()
    for bad_lines, message in (
        (lines[:4] + [lines[4].rsplit(" ", 1)[0]] + lines[5:], "line 5: expected a file name"),
        (lines[:3] + [lines[3].replace("-1", "0", 1)] + lines[4:], "line 4: value '0'"),
        (lines[:-1], "line 1 says 4 images but 3"),
        (["four"] + lines[1:], "line 1: expected the number"),
    ):
        attr.write_text("\n".join(bad_lines) + "\n")
        with pytest.raises(DatasetError, match="list_attr_celeba.txt") as err:
            CelebA(tmp_path)
        assert message in str(err.value)
    attr.write_text(good)
    (tmp_path / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"missing .*000002.jpg"):
        CelebA(tmp_path)
    (tmp_path / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    ds = CelebA(tmp_path)
    with pytest.raises(DatasetError, match="000002.jpg"):
        ds.images_at([1])
