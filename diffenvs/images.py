"""The image-batch convention every reward and reward model reads.

A batch is a float tensor (B, 3, H, W) in [0, 1] (what a VAE decode gives) or a uint8 array
(B, H, W, 3) (what a renderer or a pipeline with ``output_type="np"`` gives).
"""

from __future__ import annotations

import numpy as np
import torch

from diffenvs.errors import check_finite

ImagesLike = torch.Tensor | np.ndarray


def as_images(images: ImagesLike) -> torch.Tensor:
    """uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] → float32 tensor (B, 3, H, W)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"Reward images given as a numpy array must be uint8 of shape (B, H, W, 3); got "
                f"{images.dtype} {images.shape}. Pass float tensors (B, 3, H, W) in [0, 1] otherwise."
            )
        _check_pixels(images.shape[1:3])
        return torch.tensor(images).permute(0, 3, 1, 2).float() / 255.0
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"Reward images must be a torch.Tensor (B, 3, H, W) in [0, 1] or a uint8 numpy array "
            f"(B, H, W, 3); got {type(images).__name__}."
        )
    if images.dtype == torch.uint8 and images.ndim == 4 and images.shape[-1] == 3:
        _check_pixels(tuple(images.shape[1:3]))
        return images.permute(0, 3, 1, 2).float() / 255.0
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"Reward images must be float tensors of shape (B, 3, H, W) in [0, 1]; got "
            f"{images.dtype} {tuple(images.shape)}."
        )
    _check_pixels(tuple(images.shape[2:]))
    check_image_range(images)
    return images.float() if images.dtype != torch.float32 else images


def _check_pixels(size: tuple[int, ...]) -> None:
    if min(size) < 1:
        raise ValueError(
            f"Reward images have size {tuple(size)}; each needs at least 1 x 1 pixels."
        )


#: Float images may stray this far outside [0, 1] (rounding in a decode) before they are refused.
RANGE_TOLERANCE = 1e-3


def check_image_range(images: torch.Tensor) -> None:
    """Float images must be finite and in [0, 1]: NaN/inf raise NonFiniteError, values outside
    (e.g. 0-255 floats, or [-1, 1] VAE output not yet mapped) a ValueError."""
    x = images.detach()
    if x.numel() == 0:
        return
    check_finite(f"Reward images ({x.dtype} {tuple(x.shape)})", x)
    low, high = float(x.min()), float(x.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        hint = (
            " They look like 0-255 values: divide by 255 or pass uint8 (B, H, W, 3)."
            if high > 2
            else " They look like [-1, 1] values: map them with (x + 1) / 2."
            if low < -0.1
            else " Clamp them to [0, 1]."
        )
        raise ValueError(
            f"Reward images (float {tuple(x.shape)}) must be in [0, 1]; got values in "
            f"[{low:.4g}, {high:.4g}].{hint}"
        )
