"""The image-batch convention every reward and reward model reads.

A batch is a float tensor (B, 3, H, W) in [0, 1] (what a VAE decode gives) or a uint8 array
(B, H, W, 3) (what a renderer or a pipeline with ``output_type="np"`` gives).
"""

from __future__ import annotations

import numpy as np
import torch

ImagesLike = torch.Tensor | np.ndarray


def as_images(images: ImagesLike) -> torch.Tensor:
    """uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] → float32 tensor (B, 3, H, W)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"Reward images given as a numpy array must be uint8 of shape (B, H, W, 3); got "
                f"{images.dtype} {images.shape}. Pass float tensors (B, 3, H, W) in [0, 1] otherwise."
            )
        return torch.tensor(images).permute(0, 3, 1, 2).float() / 255.0
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"Reward images must be a torch.Tensor (B, 3, H, W) in [0, 1] or a uint8 numpy array "
            f"(B, H, W, 3); got {type(images).__name__}."
        )
    if images.dtype == torch.uint8 and images.ndim == 4 and images.shape[-1] == 3:
        return images.permute(0, 3, 1, 2).float() / 255.0
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"Reward images must be float tensors of shape (B, 3, H, W) in [0, 1]; got "
            f"{images.dtype} {tuple(images.shape)}."
        )
    return images.float() if images.dtype != torch.float32 else images
