"""The independent judge: a second attribute classifier, used only to evaluate, never as a reward.

Every RL result can then report the proxy reward (oracle-based or learned) beside the judge's
reading of the same images. When an agent games the oracle (draws what the oracle's features
respond to rather than the attribute), the two disagree, which is how reward hacking shows.

To be independent, the judge shares nothing with the oracle but the label set: a different
architecture (a residual network with group norm, coordinate input channels and global pooling,
where the oracle is a plain strided CNN with batch norm and a flattened dense trunk), a different
training-data seed, a different augmentation, and it never enters any training loss of the world.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffenvs.world.attributes import ATTRIBUTE_CLASSES, ATTRIBUTES
from diffenvs.world.oracle import predict_attributes


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, width),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AttributeJudge(nn.Module):
    """Image (B, 3, 64, 64) in [0, 1] → one logit vector per attribute."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        w = width
        # Two coordinate channels give a globally pooled network a sense of where things are
        # (position is one of the attributes).
        self.stem = nn.Conv2d(5, w, 4, stride=2, padding=1)  # 32×32
        self.stages = nn.Sequential(
            _Residual(w),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),  # 16×16
            _Residual(2 * w),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1),  # 8×8
            _Residual(4 * w),
            _Residual(4 * w),
            nn.GroupNorm(8, 4 * w),
            nn.SiLU(),
        )
        self.trunk = nn.Sequential(nn.Linear(8 * w, 192), nn.SiLU())
        self.heads = nn.ModuleDict(
            {a: nn.Linear(192, len(ATTRIBUTE_CLASSES[a])) for a in ATTRIBUTES}
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = images.shape
        ys = torch.linspace(-1, 1, h, dtype=images.dtype, device=images.device)
        xs = torch.linspace(-1, 1, w, dtype=images.dtype, device=images.device)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")).expand(b, -1, -1, -1)
        feats = self.stages(self.stem(torch.cat([images * 2 - 1, grid], dim=1)))
        pooled = torch.cat([feats.mean((2, 3)), feats.amax((2, 3))], dim=1)
        h = self.trunk(pooled)
        return {a: head(h) for a, head in self.heads.items()}

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor | np.ndarray, batch_size: int = 256
    ) -> dict[str, np.ndarray]:
        """Class indices per attribute for images as uint8 HWC arrays or float BCHW tensors."""
        return predict_attributes(self, images, batch_size)


def read_judge(path: str | Path | None = None) -> AttributeJudge:
    """Load the judge from a safetensors file (default: the one shipped with the package)."""
    from diffenvs.io import load_tensors
    from diffenvs.world.paths import weights_path

    file = Path(path) if path is not None else weights_path("judge.safetensors")
    if not file.exists():
        raise FileNotFoundError(
            f"Judge weights not found at {file}. Train them with "
            "`python -m diffenvs.world.training.train_judge` or pass the path of a safetensors file."
        )
    model = AttributeJudge()
    try:
        model.load_state_dict(load_tensors(file))
    except RuntimeError as err:
        raise ValueError(
            f"{file} does not hold AttributeJudge weights ({err}). Pass the judge.safetensors "
            "written by diffenvs.world.training.train_judge."
        ) from err
    return model.eval()
