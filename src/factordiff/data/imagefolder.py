"""Your own images as a dataset: PNG/JPEG files under a folder, with optional factors.

Without ``factors.csv`` the dataset is every ``.png``/``.jpg``/``.jpeg`` under ``root``
(recursive, sorted by relative path), indexed by image (factor ``index``, no ground truth).

With ``root/factors.csv``: a header with a column ``file`` (path relative to ``root``)
and one integer column per factor, then one row per image. Only the listed images are
used. Each factor's classes are its distinct values in increasing order (class ``k`` is
the k-th smallest value; ``factor_values`` keeps the raw values), so factors are integer
class indices like everywhere else.

* If the rows cover every combination of classes exactly once (a full grid), index ``i``
  is the combination ``np.unravel_index(i, factor_sizes)``: the C order of the published
  datasets, whatever the row order in the file.
* Otherwise the dataset indexes the rows in file order; ``images(factors)`` looks up the
  row holding each combination (an error names a combination that has no image) and
  ``sample_factors`` draws existing rows uniformly, since a uniform draw over the grid
  would hit missing combinations. A combination listed twice is an error: each
  combination must name one image, or ``images(factors)`` would be ambiguous.

All images must have the same size, unless ``image_size`` is given (an int for square
images or ``(height, width)``), in which case each is resized with a Lanczos filter
(aspect ratio not kept: crop beforehand if that matters). Output is always RGB uint8:
grayscale and palette images are converted, an alpha channel is dropped. Images are
decoded per batch.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

from factordiff.data.base import GridDataset, RandomLike, as_random_state
from factordiff.errors import DatasetError

FACTORS_CSV = "factors.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: PIL modes that convert to 8-bit RGB without losing range (16-bit/float would clip).
_EIGHT_BIT_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}


class ImageFolder(GridDataset):
    """Images under ``root`` with an optional ``factors.csv``; see the module docstring."""

    name = "imagefolder"

    def __init__(
        self, root: str | os.PathLike[str], image_size: int | tuple[int, int] | None = None
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"imagefolder: {self.root} is not a folder")
        self.resize_to = _size_arg(image_size)
        self._factor_values: tuple[np.ndarray, ...] | None = None
        #: For a full grid: dataset index -> row. ``None`` when rows are indexed directly.
        self._grid_to_row: np.ndarray | None = None
        #: Class indices (n_rows, n_factors) of every row.
        self.row_factors: np.ndarray | None = None
        self._lookup: dict[tuple[int, ...], int] = {}
        self.is_grid = True

        csv_path = self.root / FACTORS_CSV
        if csv_path.is_file():
            rel, columns, raw = parse_factors_csv(csv_path, self.root)
            self.files = tuple(self.root / r for r in rel)
            self._set_factors(csv_path, columns, raw)
        else:
            self.files = tuple(find_images(self.root))
            if not self.files:
                raise DatasetError(
                    f"imagefolder: no images found under {self.root} "
                    f"(searched recursively for {', '.join(IMAGE_SUFFIXES)})"
                )
            self.has_ground_truth = False
            self.factor_names = ("index",)
            self.factor_sizes = (len(self.files),)
        if self.resize_to is not None:
            self.image_shape = (*self.resize_to, 3)
        else:
            with _open_image(self.files[0]) as img:
                self.image_shape = (img.height, img.width, 3)

    def _set_factors(self, csv_path: Path, columns: list[str], raw: np.ndarray) -> None:
        self.factor_names = tuple(columns)
        values = [np.unique(raw[:, j]) for j in range(raw.shape[1])]
        classes = np.stack(
            [np.searchsorted(v, raw[:, j]) for j, v in enumerate(values)], axis=1
        ).astype(np.int64)
        self._factor_values = tuple(v.astype(np.int64) for v in values)
        self.factor_sizes = tuple(len(v) for v in values)
        self.row_factors = classes
        for row, key in enumerate(map(tuple, classes.tolist())):
            first = self._lookup.setdefault(key, row)
            if first != row:
                combo = ", ".join(
                    f"{n}={v}" for n, v in zip(columns, raw[row].tolist(), strict=True)
                )
                raise DatasetError(
                    f"{csv_path}: rows {first + 1} and {row + 1} ({self.files[first].name}, "
                    f"{self.files[row].name}) have the same factors ({combo}); "
                    "each combination must name one image"
                )
        n_grid = 1
        for s in self.factor_sizes:
            n_grid *= s
        self.is_grid = n_grid == len(classes)
        if self.is_grid:
            grid_to_row = np.empty(len(classes), dtype=np.int64)
            grid_to_row[np.ravel_multi_index(tuple(classes.T), self.factor_sizes)] = np.arange(
                len(classes)
            )
            self._grid_to_row = grid_to_row

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        """The raw integer values from factors.csv per class (class indices without csv)."""
        if self._factor_values is None:
            return super().factor_values
        return self._factor_values

    # --- rows instead of a grid when the csv is not a full grid ------------------------
    def __len__(self) -> int:
        return len(self.files)

    def factors_to_index(self, factors: np.ndarray) -> np.ndarray:
        if self.is_grid:
            return super().factors_to_index(factors)
        factors = self.check_factors(factors)
        out = np.empty(len(factors), dtype=np.int64)
        for i, key in enumerate(map(tuple, factors.tolist())):
            row = self._lookup.get(key)
            if row is None:
                combo = ", ".join(
                    f"{n}={v[c]}"
                    for n, v, c in zip(self.factor_names, self.factor_values, key, strict=True)
                )
                raise DatasetError(
                    f"imagefolder: no image in {self.root / FACTORS_CSV} has factors "
                    f"({combo}); the rows do not form a full grid"
                )
            out[i] = row
        return out

    def index_to_factors(self, indices: np.ndarray) -> np.ndarray:
        if self.is_grid:
            return super().index_to_factors(indices)
        assert self.row_factors is not None
        return self.row_factors[self.check_indices(indices)].copy()

    def sample_factors(self, n: int, rng: RandomLike = None) -> np.ndarray:
        """Uniform over the grid for a full grid; uniform over the listed rows otherwise."""
        if self.is_grid:
            return super().sample_factors(n, rng)
        assert self.row_factors is not None
        rng = as_random_state(rng)
        if isinstance(rng, np.random.RandomState):
            rows = rng.randint(len(self), size=n)
        else:
            rows = rng.integers(len(self), size=n)
        return self.row_factors[rows].copy()

    # --- images ------------------------------------------------------------------------
    def _read(self, indices: np.ndarray) -> np.ndarray:
        rows = indices if self._grid_to_row is None else self._grid_to_row[indices]
        out = np.empty((len(rows), *self.image_shape), dtype=np.uint8)
        for k, row in enumerate(rows):
            out[k] = self._load(self.files[int(row)])
        return out

    def _load(self, path: Path) -> np.ndarray:
        with _open_image(path) as img:
            try:
                rgb = img.convert("RGB")
                if self.resize_to is not None:
                    h, w = self.resize_to
                    if rgb.size != (w, h):
                        rgb = rgb.resize((w, h), Image.Resampling.LANCZOS)
                array = np.asarray(rgb)
            except OSError as exc:
                raise DatasetError(f"{path}: cannot decode image ({exc})") from exc
        if array.shape != self.image_shape:
            raise DatasetError(
                f"{path}: image is {array.shape[1]}x{array.shape[0]}, expected "
                f"{self.image_shape[1]}x{self.image_shape[0]} like {self.files[0].name}; "
                "pass image_size= to resize all images"
            )
        return array


def _size_arg(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise DatasetError(
            f"imagefolder: image_size must be a positive int or (height, width), got {image_size!r}"
        )
    return (int(size[0]), int(size[1]))


def _open_image(path: Path) -> Image.Image:
    """Open (header only) with a clear error; 16-bit and float images are refused."""
    try:
        img = Image.open(path)
    except FileNotFoundError as exc:
        raise DatasetError(f"imagefolder: {path} not found") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable image ({exc})") from exc
    if img.mode not in _EIGHT_BIT_MODES:
        img.close()
        raise DatasetError(
            f"{path}: image mode {img.mode!r} is not 8-bit; convert it to 8-bit RGB or grayscale"
        )
    return img


def find_images(root: Path) -> list[Path]:
    """Every PNG/JPEG under ``root`` (recursive), sorted by path relative to ``root``."""
    found = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def parse_factors_csv(path: Path, root: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Relative file paths, factor column names and raw int64 values (n, n_factors).

    Errors name the line and column; every listed file must exist under ``root``.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read as CSV ({exc})") from exc
    if not rows:
        raise DatasetError(f"{path}: empty; expected a header `file,<factor>,...`")
    header = [h.strip() for h in rows[0]]
    if "file" not in header:
        raise DatasetError(
            f"{path}: no `file` column in the header {header}; expected `file` "
            "(image path relative to the folder) then one integer column per factor"
        )
    if len(set(header)) != len(header) or "" in header:
        raise DatasetError(f"{path}: column names must be unique and non-empty, got {header}")
    file_col = header.index("file")
    factor_cols = [j for j in range(len(header)) if j != file_col]
    if not factor_cols:
        raise DatasetError(
            f"{path}: only a `file` column; add one integer column per factor "
            "(or delete factors.csv to use the images without factors)"
        )
    files: list[str] = []
    values: list[list[int]] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DatasetError(
                f"{path}, line {lineno}: expected {len(header)} fields, got {len(row)}"
            )
        rel = row[file_col].strip()
        if not rel:
            raise DatasetError(f"{path}, line {lineno}: empty `file`")
        parsed = []
        for j in factor_cols:
            cell = row[j].strip()
            try:
                parsed.append(int(cell))
            except ValueError:
                raise DatasetError(
                    f"{path}, line {lineno}, column {header[j]!r}: {cell!r} is not an integer"
                ) from None
        if rel in seen:
            raise DatasetError(f"{path}, line {lineno}: {rel} already listed on line {seen[rel]}")
        if not (root / rel).is_file():
            raise DatasetError(f"{path}, line {lineno}: listed file {rel} not found in {root}")
        seen[rel] = lineno
        files.append(rel)
        values.append(parsed)
    if not files:
        raise DatasetError(f"{path}: no rows; expected one row per image")
    return files, [header[j] for j in factor_cols], np.array(values, dtype=np.int64)
