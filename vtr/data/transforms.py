"""Frame transforms of the official pipeline, on torch tensors (no torchvision).

Frames come in as uint8 ``[T, H, W, 3]`` (numpy or torch) and leave as float32 ``[T, 3, H', W']``,
ImageNet-normalised.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

SizeArg = int | tuple[int, int]


def _size_hw(size: SizeArg) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


def to_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` (numpy or torch) -> float32 ``[T, 3, H, W]`` with values in 0..255."""
    if isinstance(frames, np.ndarray):
        array = np.ascontiguousarray(frames)
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    else:
        tensor = frames
    if tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {tuple(tensor.shape)}")
    return tensor.permute(0, 3, 1, 2).to(torch.float32)


def resize_uint8_like(x: torch.Tensor, size: tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """Bicubic resize of float ``[T, C, H, W]`` pixel values, rounded and clamped to 0..255.

    Mimics torchvision's ``Resize`` on uint8 tensors (float interpolation, then clamp and round back to
    uint8), so the result equals the official pipeline's up to float arithmetic. Same-size input is
    returned unchanged.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=antialias)
    return out.clamp_(0.0, 255.0).round_()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Pixel values 0..255 ``[T, 3, H, W]`` -> ``/255`` then ImageNet mean/std normalisation."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


def eval_transform(
    frames: np.ndarray | torch.Tensor, size: SizeArg = 224, antialias: bool = False
) -> torch.Tensor:
    """Official evaluation transform: squash-resize to ``size`` (bicubic, aspect not kept, no crop),
    ``/255``, ImageNet normalise. Returns float32 ``[T, 3, size, size]``.

    ``antialias=False`` matches torchvision 0.16's tensor ``Resize`` default used by the official code.
    """
    return normalize(resize_uint8_like(to_tchw(frames), _size_hw(size), antialias=antialias))


def eval_pixels(frames: np.ndarray | torch.Tensor, size: SizeArg = 224, antialias: bool = False) -> torch.Tensor:
    """The first half of :func:`eval_transform`: the resized pixels as uint8 ``[T, 3, size, size]`` (exact: the
    resize rounds to integers), a quarter of float32's bytes to move between processes or to a GPU;
    ``normalize(eval_pixels(f).float())`` equals ``eval_transform(f)`` bit for bit."""
    return resize_uint8_like(to_tchw(frames), _size_hw(size), antialias=antialias).to(torch.uint8)


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rng: np.random.Generator | None = None,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a RandomResizedCrop box.

    Up to 10 tries: an area fraction uniform in ``scale`` and an aspect ratio log-uniform in ``ratio``;
    a box that fits is placed uniformly at random. Otherwise the centre crop with the aspect ratio
    clamped to ``ratio`` (the whole image if it already is in range).
    """
    rng = rng if rng is not None else _rng_from_torch()
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _rng_from_torch() -> np.random.Generator:
    """A numpy generator seeded from torch's global RNG (which DataLoader seeds per worker)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def train_transform(
    frames: np.ndarray | torch.Tensor,
    size: SizeArg = 224,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip_p: float = 0.5,
    rng: np.random.Generator | None = None,
    antialias: bool = False,
) -> torch.Tensor:
    """Official training transform: one RandomResizedCrop box and one horizontal-flip decision for the
    whole clip, bicubic resize to ``size``, ``/255``, ImageNet normalise. Returns float32 ``[T, 3, H, W]``.

    Without ``rng`` the randomness is drawn from torch's global generator (so ``torch.manual_seed`` and
    DataLoader worker seeding apply).
    """
    rng = rng if rng is not None else _rng_from_torch()
    x = to_tchw(frames)
    top, left, h, w = random_resized_crop_params(x.shape[-2], x.shape[-1], scale, ratio, rng)
    x = resize_uint8_like(x[..., top : top + h, left : left + w], _size_hw(size), antialias=antialias)
    if rng.random() < hflip_p:
        x = x.flip(-1)
    return normalize(x)
