"""The attribute oracle: a small CNN that reads every world attribute off an image.

It stands in for the object detector and scene recogniser of RLDF's semantic rewards, measures how
well generated images follow their prompts, and drives the synthetic preference labelers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffenvs.world.attributes import ATTRIBUTE_CLASSES, ATTRIBUTES


class AttributeOracle(nn.Module):
    """Image (B, 3, 64, 64) in [0, 1] → one logit vector per attribute."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, k: int = 3) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, k, stride=2, padding=k // 2),
                nn.BatchNorm2d(cout),
                nn.GELU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.GELU(),
            )

        self.features = nn.Sequential(
            block(3, w, 5), block(w, 2 * w), block(2 * w, 3 * w), block(3 * w, 4 * w)
        )
        self.trunk = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * 16, 256), nn.GELU(), nn.Dropout(0.1)
        )
        self.heads = nn.ModuleDict(
            {a: nn.Linear(256, len(ATTRIBUTE_CLASSES[a])) for a in ATTRIBUTES}
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(self.features(images * 2 - 1))
        return {a: head(h) for a, head in self.heads.items()}

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor | np.ndarray, batch_size: int = 256
    ) -> dict[str, np.ndarray]:
        """Class indices per attribute for images as uint8 HWC arrays or float BCHW tensors."""
        return predict_attributes(self, images, batch_size)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """Softmax probabilities per attribute, for soft semantic rewards."""
        self.eval()
        return {a: v.softmax(-1) for a, v in self(as_image_tensor(images)).items()}


@torch.no_grad()
def predict_attributes(
    model: nn.Module, images: torch.Tensor | np.ndarray, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Arg-max class per attribute of any attribute classifier (the oracle, the judge), in batches."""
    x = as_image_tensor(images)
    model.eval()
    out: dict[str, list[np.ndarray]] = {a: [] for a in ATTRIBUTES}
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        for a in ATTRIBUTES:
            out[a].append(logits[a].argmax(-1).cpu().numpy())
    return {a: np.concatenate(v) for a, v in out.items()}


def as_image_tensor(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) arrays or float (B, 3, H, W) tensors in [0, 1] → float tensor in [0, 1]."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"Expected uint8 images of shape (B, H, W, 3), got {images.shape}.")
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"Expected float images of shape (B, 3, H, W), got {tuple(images.shape)}.")
    return images.float()


def read_oracle(path: str | Path | None = None) -> AttributeOracle:
    """Read the oracle from a safetensors file (default: the one shipped with the package).

    The public loader is :func:`diffenvs.models.load_oracle` (device placement, the loaders'
    error types); this is the world's own file reader.
    """
    from diffenvs.io import load_tensors
    from diffenvs.world.paths import weights_path

    file = Path(path) if path is not None else weights_path("oracle.safetensors")
    if not file.exists():
        raise FileNotFoundError(
            f"Oracle weights not found at {file}. Train them with "
            "`python -m diffenvs.world.training.train_oracle` or pass the path of a safetensors file."
        )
    model = AttributeOracle()
    try:
        model.load_state_dict(load_tensors(file))
    except RuntimeError as err:
        raise ValueError(
            f"{file} does not hold AttributeOracle weights ({err}). Pass the oracle.safetensors "
            "written by diffenvs.world.training.train_oracle."
        ) from err
    return model.eval()
