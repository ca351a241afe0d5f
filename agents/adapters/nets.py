"""Small networks over ``DiffusionDenoise-v0`` observations, shared by the SB3 and Tianshou adapters
(and the PPO agent's value head).

:class:`LatentEncoder` maps a batch of observations (``latent`` x_t (B, C, h, w), ``timestep``
(B, 1), ``prompt_embeds`` (B, L, D)) to a feature vector: a small CNN over the latent, sinusoidal
timestep features, and mean-pooled prompt embeddings. It is cheap next to the diffusion UNet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

OBS_KEYS = ("latent", "timestep", "prompt_embeds")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of diffusion timesteps (B, 1) → (B, dim), as diffusion UNets use."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float().reshape(-1, 1) * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def obs_to_tensors(obs: Any, device: torch.device | str) -> dict[str, torch.Tensor]:
    """A dict / Tianshou ``Batch`` of numpy arrays or tensors → float32 tensors on ``device``."""
    out = {}
    for key in OBS_KEYS:
        value = obs[key]
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(np.asarray(value))
        out[key] = value.to(device=device, dtype=torch.float32)
    return out


class LatentEncoder(nn.Module):
    """Observation dict → features (B, ``features_dim``).

    Three 3x3 convs (two with stride 2) and an adaptive pool to 4 x 4 suit latents of 8-64 px
    (the world's are 16 x 16, SD's 64 x 64).
    """

    def __init__(
        self,
        latent_channels: int,
        text_width: int,
        features_dim: int = 256,
        channels: Sequence[int] = (32, 64, 64),
        time_dim: int = 64,
        text_dim: int = 64,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.cnn = nn.Sequential(
            nn.Conv2d(latent_channels, c1, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.time_dim = time_dim
        self.text = nn.Linear(text_width, text_dim)
        self.head = nn.Sequential(nn.Linear(c3 * 16 + time_dim + text_dim, features_dim), nn.SiLU())
        self.features_dim = features_dim

    @classmethod
    def for_space(cls, observation_space: Any, **kwargs: Any) -> LatentEncoder:
        """Sized from the env's (single) ``Dict`` observation space."""
        return cls(
            observation_space["latent"].shape[0],
            observation_space["prompt_embeds"].shape[-1],
            **kwargs,
        )

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        latent = self.cnn(obs["latent"])
        time = timestep_embedding(obs["timestep"], self.time_dim)
        text = self.text(obs["prompt_embeds"].mean(dim=1))
        return self.head(torch.cat([latent, time, text], dim=-1))
