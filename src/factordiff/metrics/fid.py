"""Frechet Inception Distance, computed as pytorch-fid computes it.

Published FIDs (EncDiff's CelebA table used pytorch-fid on 10000 images) are only comparable with
ours when every step matches the reference: the TF FID Inception weights
(``pt_inception-2015-12-05-6726825d.pth``), images scaled to [0, 1] (uint8 / 255), bilinear resize
to 299x299 without antialiasing, ``2 x - 1``, 2048-d pool3 features, mean and ``np.cov`` in float64,
and the Frechet distance with ``scipy.linalg.sqrtm``. Report the sample count with the number:
FID is biased by the sample size, and with fewer than 2048 images the covariances are singular.

The weights are never downloaded here: pass ``weights=PATH`` or set ``FACTORDIFF_FID_WEIGHTS``.
torch-fidelity's file ``weights-inception-2015-12-05-6726825d.pth`` holds the same network under the
same state-dict keys and is accepted too (torch-fidelity's own resize and scaling differ slightly
from pytorch-fid's; we always use pytorch-fid's).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn

from factordiff.errors import FactordiffError
from factordiff.metrics.inception import (
    FID_WEIGHTS_FILE,
    FID_WEIGHTS_URL,
    TORCH_FIDELITY_WEIGHTS_FILE,
    FIDInceptionV3,
)
from factordiff.metrics.utils import MetricInputError

WEIGHTS_ENV = "FACTORDIFF_FID_WEIGHTS"

ImageBatch = np.ndarray | torch.Tensor
Images = ImageBatch | Iterable[ImageBatch]


class FIDWeightsError(FactordiffError):
    """The FID Inception weights are missing, unreadable or not the expected network."""


def _how_to_get_weights() -> str:
    return (
        f"FID needs the Inception weights file {FID_WEIGHTS_FILE} (pytorch-fid's TF FID Inception; "
        f"torch-fidelity's {TORCH_FIDELITY_WEIGHTS_FILE} works too). Download it from "
        f"{FID_WEIGHTS_URL} and pass weights=PATH or set the environment variable "
        f"{WEIGHTS_ENV}=PATH."
    )


def resolve_weights(weights: str | os.PathLike | None = None) -> Path:
    """Path of the weights file from ``weights`` or ``$FACTORDIFF_FID_WEIGHTS``.

    A directory is searched for either published file name.
    """
    source = "weights="
    if weights is None:
        env = os.environ.get(WEIGHTS_ENV)
        if not env:
            raise FIDWeightsError(_how_to_get_weights())
        weights, source = env, f"${WEIGHTS_ENV}="
    path = Path(weights).expanduser()
    if path.is_dir():
        for name in (FID_WEIGHTS_FILE, TORCH_FIDELITY_WEIGHTS_FILE):
            if (path / name).is_file():
                return path / name
        raise FIDWeightsError(
            f"{source}{path} is a folder without {FID_WEIGHTS_FILE}. " + _how_to_get_weights()
        )
    if not path.is_file():
        raise FIDWeightsError(f"{source}{path} does not exist. " + _how_to_get_weights())
    return path


def _prepare_state_dict(raw: object, model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Check the file's keys and shapes against our network; fill BatchNorm step counters.

    The published file may predate ``num_batches_tracked`` (a training-only counter); it is set to 0
    when absent. Anything else that differs is an error naming the keys, so a wrong file (e.g.
    torchvision's ImageNet Inception) cannot give a silently wrong FID.
    """
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping):
        raise FIDWeightsError(f"{path} does not hold a state dict (got {type(raw).__name__})")
    sd = {k.removeprefix("module."): v for k, v in raw.items()}
    expected = model.state_dict()
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = torch.zeros((), dtype=torch.long)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        hint = ""
        if any(k.startswith("AuxLogits") for k in unexpected):
            hint = " This looks like torchvision's ImageNet Inception, not the FID network."
        raise FIDWeightsError(
            f"{path} is not the FID Inception state dict: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}.{hint} "
            + _how_to_get_weights()
        )
    bad = [
        f"{k} {tuple(getattr(sd[k], 'shape', ()))} != {tuple(v.shape)}"
        for k, v in expected.items()
        if not isinstance(sd[k], torch.Tensor) or sd[k].shape != v.shape
    ]
    if bad:
        raise FIDWeightsError(f"{path} has tensors of the wrong shape: {bad[:5]}")
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def load_inception(
    weights: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> FIDInceptionV3:
    """FID Inception with the published weights, in eval mode, without gradients."""
    path = resolve_weights(weights)
    with torch.device("meta"):  # no random init: every tensor comes from the file
        model = FIDInceptionV3()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have no common base class
        raise FIDWeightsError(
            f"could not read {path} as a torch state dict ({type(exc).__name__}: {exc}). "
            + _how_to_get_weights()
        ) from exc
    model.load_state_dict(_prepare_state_dict(raw, model, path), strict=True, assign=True)
    model.requires_grad_(False)
    return model.eval().to(_device(device))


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2))`` of two Gaussians.

    pytorch-fid's computation: ``scipy.linalg.sqrtm`` of ``S1 @ S2``; when that is not finite,
    ``eps * I`` is added to both covariances; an imaginary part from rounding is dropped, but one
    with a diagonal above 1e-3 (covariances that are not PSD) raises.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise MetricInputError(
            f"means must be vectors of one length, got {mu1.shape} and {mu2.shape}"
        )
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise MetricInputError(
            f"covariances must be ({d}, {d}) to match the means, "
            f"got {sigma1.shape} and {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            imag = np.max(np.abs(covmean.imag))
            raise MetricInputError(
                f"sqrt(sigma1 @ sigma2) has an imaginary component of {imag:.3g}: "
                "the covariances are not positive semi-definite"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    # Sample covariances of fewer than d points are singular by construction; scipy warns about
    # that on every call. The finiteness check above is what decides (as in pytorch-fid).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(a)


def _batches(images: Images, name: str) -> Iterator[ImageBatch]:
    """The batches of ``images`` (one array, or an iterable of arrays), shape-checked."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        images = [images]
    elif isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Iterable):
        raise MetricInputError(
            f"{name} must be an array (N, H, W, C) or an iterable of such batches, "
            f"got {type(images).__name__}"
        )
    for batch in images:
        if not isinstance(batch, (np.ndarray, torch.Tensor)):
            batch = np.asarray(batch)
        shape = tuple(batch.shape)
        if len(shape) == 3 and shape[-1] not in (1, 3):
            batch = batch[..., None]  # (N, H, W) grayscale
        if batch.ndim != 4 or batch.shape[-1] not in (1, 3):
            hint = ""
            if batch.ndim == 4 and batch.shape[1] in (1, 3):
                hint = " (this looks channel-first; pass channel-last, e.g. x.permute(0, 2, 3, 1))"
            elif batch.ndim == 3:
                hint = " (a single image? add a batch axis: img[None])"
            raise MetricInputError(
                f"{name}: each batch must be (N, H, W, C) with C = 3 (RGB) or 1 (grayscale), "
                f"got shape {shape}{hint}"
            )
        yield batch


def _to_tensor(batch: ImageBatch, name: str, device: torch.device) -> torch.Tensor:
    """(N, H, W, C) uint8 or [0, 1] float -> (N, 3, H, W) float32 in [0, 1] on ``device``.

    uint8 is divided by 255 in float32, as torchvision's ``ToTensor`` in pytorch-fid does.
    """
    x = torch.as_tensor(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
    if x.dtype == torch.uint8:
        x = x.to(device).permute(0, 3, 1, 2).float().div(255)
    elif x.dtype.is_floating_point:
        x = x.to(device).permute(0, 3, 1, 2).float()
        lo, hi = x.min().item(), x.max().item()
        if not (lo >= 0 and hi <= 1):  # also catches NaN
            raise MetricInputError(
                f"{name}: float images must lie in [0, 1], got [{lo:.3g}, {hi:.3g}] "
                "(images in [-1, 1]: pass (x + 1) / 2)"
            )
    else:
        raise MetricInputError(f"{name}: images must be uint8 or float in [0, 1], got {x.dtype}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x


def _module_device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def activations(
    images: Images,
    extractor: nn.Module,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    name: str = "images",
) -> np.ndarray:
    """Features (N, D) float64 of all images, ``batch_size`` at a time.

    ``extractor`` (a module or any callable) receives (B, 3, H, W) float32 in [0, 1] on ``device``
    (default: the module's device) and returns (B, D) or (B, D, h, w) (then spatially averaged, as
    pytorch-fid does). It runs without gradients and in eval mode; a module's previous train/eval
    mode is restored afterwards.
    """
    if batch_size < 1:
        raise MetricInputError(f"batch_size must be >= 1, got {batch_size}")
    is_module = isinstance(extractor, nn.Module)
    if device is not None:
        dev = torch.device(device)
    else:
        dev = _module_device(extractor) if is_module else torch.device("cpu")
    was_training = is_module and extractor.training
    if is_module:
        extractor.eval()
    out: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for batch in _batches(images, name):
                for start in range(0, len(batch), batch_size):
                    x = _to_tensor(batch[start : start + batch_size], name, dev)
                    f = extractor(x)
                    if f.ndim == 4:
                        f = f.mean(dim=(2, 3))
                    if f.ndim != 2 or f.shape[0] != x.shape[0]:
                        raise MetricInputError(
                            f"the feature extractor must map {x.shape[0]} images to "
                            f"({x.shape[0]}, D) features, got shape {tuple(f.shape)}"
                        )
                    out.append(f.detach().cpu().numpy().astype(np.float64))
    finally:
        if is_module:
            extractor.train(was_training)
    if len({a.shape[1] for a in out}) > 1:
        raise MetricInputError(f"{name}: the feature extractor returned different feature sizes")
    acts = np.concatenate(out) if out else np.zeros((0, 0))
    if acts.shape[0] < 2:
        raise MetricInputError(f"{name}: FID needs at least 2 images, got {acts.shape[0]}")
    return acts


def activation_statistics(
    images: Images,
    extractor: nn.Module,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    name: str = "images",
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) in float64 of the features (``np.cov``, ``rowvar=False``)."""
    acts = activations(images, extractor, batch_size, device, name)
    return np.mean(acts, axis=0), np.cov(acts, rowvar=False)


def fid(
    real: Images,
    fake: Images,
    weights: str | os.PathLike | None = None,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    feature_extractor: nn.Module | None = None,
) -> float:
    """FID between two image sets, identical to pytorch-fid's (2048-d pool3 features).

    ``real`` / ``fake``: uint8 arrays or tensors (N, H, W, 3) in 0..255, or float in [0, 1], or an
    iterable of such batches (so that 10000+ images need not be in memory at once). Grayscale
    images, (N, H, W, 1) or (N, H, W), are repeated to 3 channels, as pytorch-fid's
    ``PIL.convert('RGB')`` does. Each set needs at least 2 images.

    ``weights``: path of ``pt_inception-2015-12-05-6726825d.pth`` (or a folder holding it); default
    ``$FACTORDIFF_FID_WEIGHTS``. ``feature_extractor``: any module mapping (B, 3, H, W) [0, 1]
    images to (B, D) features, used instead of the Inception (then ``weights`` must be None).
    ``device``: default the extractor's device, or CUDA when available for the Inception.
    """
    if feature_extractor is None:
        feature_extractor = load_inception(weights, device)
    elif weights is not None:
        raise MetricInputError("pass either weights or feature_extractor, not both")
    mu1, s1 = activation_statistics(real, feature_extractor, batch_size, device, "real")
    mu2, s2 = activation_statistics(fake, feature_extractor, batch_size, device, "fake")
    return frechet_distance(mu1, s1, mu2, s2)
