"""Frame transforms: shapes, exact normalisation, squash resize, clip-consistent random crop and flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vtr.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    random_resized_crop_params,
    train_transform,
)

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _unnormalize(x: torch.Tensor) -> torch.Tensor:
    """Back to 0..255 pixel values."""
    return (x * STD + MEAN) * 255.0


def test_constants() -> None:
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("as_torch", [False, True])
def test_eval_shapes_and_dtype(as_torch: bool) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 128, 3), dtype=np.uint8)
    out = eval_transform(torch.from_numpy(frames) if as_torch else frames)
    assert out.shape == (3, 3, 224, 224) and out.dtype == torch.float32
    assert eval_transform(frames, size=32).shape == (3, 3, 32, 32)
    assert eval_transform(frames, size=(16, 24)).shape == (3, 3, 16, 24)


def test_constant_colour_normalises_exactly() -> None:
    frames = np.empty((2, 50, 70, 3), np.uint8)
    frames[...] = (200, 100, 50)
    out = eval_transform(frames)
    pixel = torch.tensor([200.0, 100.0, 50.0])
    expected = (pixel / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    for c in range(3):
        assert torch.equal(out[:, c], torch.full_like(out[:, c], expected[c].item())), c


def test_squash_keeps_the_whole_frame() -> None:
    # 64x128 (H x W): left half black, right half white. A squash resize keeps both halves whole
    # (a centre crop to a square would keep only the middle 64 columns).
    frames = np.zeros((1, 64, 128, 3), np.uint8)
    frames[:, :, 64:] = 255
    pixels = _unnormalize(eval_transform(frames))[0, 0]
    assert pixels.shape == (224, 224)
    assert torch.allclose(pixels[:, :100], torch.zeros(224, 100), atol=1e-3)
    assert torch.allclose(pixels[:, 124:], torch.full((224, 100), 255.0), atol=1e-3)


def test_resize_output_is_rounded_like_uint8() -> None:
    frames = np.random.default_rng(1).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    pixels = _unnormalize(eval_transform(frames, size=40))
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3  # bicubic overshoot clamped


def test_antialias_is_a_real_option() -> None:
    # Vertical stripes 4 px wide, shrunk 4x: without antialiasing each output pixel samples the middle
    # of one stripe (pure black/white); with it, neighbouring stripes blend in (46 / 209 here).
    stripes = np.tile(((np.arange(64) // 4) % 2 * 255).astype(np.uint8), (64, 1))
    frames = np.repeat(stripes[None, :, :, None], 3, axis=3)
    plain = _unnormalize(eval_transform(frames, size=16))[0, 0, 8]
    smooth = _unnormalize(eval_transform(frames, size=16, antialias=True))[0, 0, 8]
    assert abs(plain.min()) < 1e-3 and abs(plain.max() - 255) < 1e-3
    assert smooth[2:-2].min() > 30 and smooth[2:-2].max() < 225


def test_normalised_uniform_noise_statistics() -> None:
    frames = np.random.default_rng(2).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    out = eval_transform(frames)  # already 224: no resampling
    means = out.mean(dim=(0, 2, 3))
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(means, expected, atol=0.01)


def test_train_same_crop_and_flip_for_every_frame() -> None:
    frame = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    frames = np.repeat(frame[None], 5, axis=0)
    for seed in range(5):
        out = train_transform(frames, size=32, rng=np.random.default_rng(seed))
        assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32
        for t in range(1, 5):
            assert torch.equal(out[t], out[0])


def test_train_is_reproducible_per_seed() -> None:
    frames = np.random.default_rng(4).integers(0, 256, (2, 60, 80, 3), dtype=np.uint8)
    a = train_transform(frames, size=32, rng=np.random.default_rng(7))
    b = train_transform(frames, size=32, rng=np.random.default_rng(7))
    assert torch.equal(a, b)
    torch.manual_seed(0)
    c = train_transform(frames, size=32)
    torch.manual_seed(0)
    d = train_transform(frames, size=32)
    assert torch.equal(c, d)  # without rng: torch's global generator decides


def test_train_flip_flips() -> None:
    # A horizontal gradient; a crop of the whole frame (scale 1, the frame's own aspect ratio).
    gradient = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    frames = np.repeat(gradient[None, :, :, None], 3, axis=3)
    kwargs = dict(size=(48, 64), scale=(1.0, 1.0), ratio=(64 / 48, 64 / 48))
    plain = train_transform(frames, hflip_p=0.0, rng=np.random.default_rng(0), **kwargs)
    flipped = train_transform(frames, hflip_p=1.0, rng=np.random.default_rng(0), **kwargs)
    assert torch.equal(plain, eval_transform(frames, size=(48, 64)))
    assert torch.equal(flipped, plain.flip(-1))
    assert flipped[0, 0, 0, 0] > flipped[0, 0, 0, -1]  # bright on the left after the flip


def test_crop_params_in_bounds() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        top, left, h, w = random_resized_crop_params(60, 80, (0.5, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        assert 0.5 * 4800 * 0.9 <= h * w <= 4800


def test_crop_params_fallback_is_centre_crop() -> None:
    # On a square image, a ratio of 2..3 at full area never fits: centre crop, ratio clamped to 2.
    assert random_resized_crop_params(100, 100, (1.0, 1.0), (2.0, 3.0), np.random.default_rng(0)) == (
        25,
        0,
        50,
        100,
    )
    # An image already within the ratio range: the whole image.
    assert random_resized_crop_params(100, 120, (2.0, 2.0), (0.5, 2.0), np.random.default_rng(0)) == (
        0,
        0,
        100,
        120,
    )


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError):
        eval_transform(np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize("shape", [(3, 37, 53, 3), (2, 32, 32, 3)], ids=["resized", "same_size"])
def test_eval_pixels_then_normalize_is_eval_transform_bit_for_bit(shape) -> None:
    """Indexing moves uint8 pixels and normalises them on the encoder's device: the clip must be the eval
    transform's exactly (the resize rounds to integers, so nothing is lost)."""
    from vtr.data.transforms import eval_pixels, normalize

    frames = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    pixels = eval_pixels(frames, 32)
    assert pixels.dtype == torch.uint8 and pixels.shape == (shape[0], 3, 32, 32)
    torch.testing.assert_close(normalize(pixels.float()), eval_transform(frames, 32), rtol=0, atol=0)
