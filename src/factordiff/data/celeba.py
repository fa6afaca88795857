"""CelebA aligned faces (Liu et al. 2015) with their 40 binary attributes, decoded lazily.

Expected under ``root`` (the layout of the official download, either flat or in the
``Img/``, ``Anno/``, ``Eval/`` folders of the Google Drive release):

* ``img_align_celeba/000001.jpg`` ... (178x218 JPEGs);
* ``list_attr_celeba.txt``: line 1 the image count, line 2 the 40 attribute names, then
  one line per image ``000001.jpg v1 .. v40`` with values +1/-1;
* optionally ``list_eval_partition.txt``: ``000001.jpg 0`` (0 train, 1 valid, 2 test),
  needed for ``split`` other than ``"all"``.

CelebA has no ground-truth factors: the dataset is indexed by image (factor ``index``)
and the attributes (``attributes``, int8 in {0, 1}) serve the TAD metric.

Preprocessing (both with PIL bilinear resizing, which is what torchvision's ``Resize``
does on PIL images, so numbers stay comparable with the published pipelines):

* ``"crop148"`` (default): centre crop 148x148, resize to ``image_size``; the
  ``CenterCrop(148), Resize(64)`` protocol of the VAE/DisDiff/EncDiff CelebA loaders.
* ``"resize96crop64"``: resize the shorter side to 1.5 x ``image_size`` (96 for 64),
  centre crop ``image_size``; the protocol of the TAD papers (NashAE, InfoDiffusion).

JPEGs are decoded per batch, never all at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from factordiff.data.base import GridDataset
from factordiff.errors import DatasetError

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"
SPLITS = {"train": 0, "valid": 1, "test": 2}
PREPROCESS = ("crop148", "resize96crop64")
CROP = 148

Preprocess = Literal["crop148", "resize96crop64"]
Split = Literal["all", "train", "valid", "test"]


class CelebA(GridDataset):
    """CelebA from ``root``; see the module docstring for the layout and preprocessing."""

    name = "celeba"
    factor_names = ("index",)
    has_ground_truth = False

    def __init__(
        self,
        root: str | os.PathLike[str],
        preprocess: Preprocess = "crop148",
        image_size: int = 64,
        split: Split = "all",
    ) -> None:
        if preprocess not in PREPROCESS:
            raise DatasetError(
                f"celeba: preprocess must be one of {PREPROCESS}, got {preprocess!r}"
            )
        if split != "all" and split not in SPLITS:
            raise DatasetError(
                f"celeba: split must be 'all' or one of {tuple(SPLITS)}, got {split!r}"
            )
        if not isinstance(image_size, int) or image_size < 1:
            raise DatasetError(f"celeba: image_size must be a positive int, got {image_size!r}")
        if preprocess == "crop148" and image_size > CROP:
            raise DatasetError(f"celeba: crop148 gives at most {CROP}x{CROP}, got {image_size}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"celeba: {self.root} is not a folder")
        self.preprocess = preprocess
        self.split = split
        self.image_shape = (image_size, image_size, 3)

        attr_path = _find(self.root, ATTR_FILE, ("", "Anno"))
        if attr_path is None:
            raise DatasetError(f"celeba: {self.root / ATTR_FILE} not found")
        filenames, attributes, attribute_names = parse_attr_file(attr_path)
        partition_path = _find(self.root, PARTITION_FILE, ("", "Eval"))
        partition = None
        if partition_path is not None:
            partition = parse_partition_file(partition_path, filenames)
        if split != "all":
            if partition is None:
                raise DatasetError(
                    f"celeba: split={split!r} needs {self.root / PARTITION_FILE} (not found)"
                )
            keep = partition == SPLITS[split]
            filenames = [f for f, k in zip(filenames, keep, strict=True) if k]
            attributes = attributes[keep]
            partition = partition[keep]

        image_dir = _find(self.root, IMAGE_DIR, ("", "Img"))
        if image_dir is None or not image_dir.is_dir():
            raise DatasetError(f"celeba: image folder {self.root / IMAGE_DIR} not found")
        self.image_dir: Path = image_dir
        present = set(os.listdir(self.image_dir))
        missing = [f for f in filenames if f not in present]
        if missing:
            raise DatasetError(
                f"celeba: {len(missing)} image(s) listed in {attr_path.name} are missing from "
                f"{self.image_dir}, e.g. {missing[:3]}"
            )
        #: Image file names, in dataset order.
        self.filenames: tuple[str, ...] = tuple(filenames)
        self.attributes = attributes
        self.attribute_names = attribute_names
        #: 0 train, 1 valid, 2 test per image, when list_eval_partition.txt exists.
        self.partition: np.ndarray | None = partition
        self.factor_sizes = (len(self.filenames),)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self.image_shape), dtype=np.uint8)
        for row, i in enumerate(indices):
            path = self.image_dir / self.filenames[int(i)]
            try:
                with Image.open(path) as img:
                    out[row] = self._transform(img.convert("RGB"), path)
            except OSError as exc:
                raise DatasetError(f"{path}: cannot decode image ({exc})") from exc
        return out

    def _transform(self, img: Image.Image, path: Path) -> np.ndarray:
        size = self.image_shape[0]
        if self.preprocess == "crop148":
            img = center_crop(img, CROP, path).resize((size, size), Image.Resampling.BILINEAR)
        else:
            img = center_crop(resize_shorter(img, round(1.5 * size)), size, path)
        return np.asarray(img)


def _find(root: Path, name: str, subdirs: tuple[str, ...]) -> Path | None:
    for sub in subdirs:
        path = root / sub / name if sub else root / name
        if path.exists():
            return path
    return None


def resize_shorter(img: Image.Image, short: int) -> Image.Image:
    """Resize so the shorter side is ``short`` (torchvision ``Resize(int)`` rounding)."""
    w, h = img.size
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    return img.resize(new, Image.Resampling.BILINEAR)


def center_crop(img: Image.Image, size: int, path: Path) -> Image.Image:
    """Centre ``size`` x ``size`` crop (torchvision ``CenterCrop`` offsets)."""
    w, h = img.size
    if w < size or h < size:
        raise DatasetError(f"{path}: image is {w}x{h}, smaller than the {size}x{size} crop")
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def parse_attr_file(path: Path) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """File names, attributes int8 (n, k) in {0, 1}, attribute names; line-numbered errors."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and an attribute-name line")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DatasetError(
            f"{path}, line 1: expected the number of images, got {lines[0][:40]!r}"
        ) from None
    names = tuple(lines[1].split())
    if not names:
        raise DatasetError(f"{path}, line 2: expected the attribute names")
    k = len(names)
    valid = {"1", "-1"}
    filenames: list[str] = []
    bits: list[str] = []
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) != k + 1:
            raise DatasetError(
                f"{path}, line {lineno}: expected a file name and {k} values, "
                f"got {len(parts)} fields"
            )
        values = parts[1:]
        if not valid.issuperset(values):
            col = next(j for j, v in enumerate(values) if v not in valid)
            raise DatasetError(
                f"{path}, line {lineno}: value {values[col]!r} for {names[col]} is not 1 or -1"
            )
        filenames.append(parts[0])
        # Each token is "1" or "-1": joined and with "-1" -> "0" this is k characters.
        bits.append("".join(values).replace("-1", "0"))
    if len(filenames) != count:
        raise DatasetError(
            f"{path}: line 1 says {count} images but {len(filenames)} are listed (truncated?)"
        )
    if len(set(filenames)) != len(filenames):
        raise DatasetError(f"{path}: some file names are listed twice")
    flat = np.frombuffer("".join(bits).encode("ascii"), dtype=np.uint8)
    attributes = (flat - ord("0")).astype(np.int8).reshape(len(filenames), k)
    return filenames, attributes, names


def parse_partition_file(path: Path, filenames: list[str]) -> np.ndarray:
    """Partition (0 train, 1 valid, 2 test) of every listed file name."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    lookup: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DatasetError(
                f"{path}, line {lineno}: expected '<file name> <0|1|2>', got {line[:60]!r}"
            )
        lookup[parts[0]] = int(parts[1])
    missing = [f for f in filenames if f not in lookup]
    if missing:
        raise DatasetError(f"{path}: no partition for {len(missing)} image(s), e.g. {missing[:3]}")
    return np.array([lookup[f] for f in filenames], dtype=np.int8)
