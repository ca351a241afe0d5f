"""Model-free image rewards: colourfulness, JPEG (in)compressibility, target-image RMSE."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffenvs.errors import ArgumentTypeError, check_finite, check_int, check_number, summarise
from diffenvs.rewards.base import Reward, as_float_image_tensor, as_images

# sRGB (D65) → CIE XYZ and the D65 white point, as in the usual colour-science references.
_RGB_TO_XYZ = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883])


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB images (B, 3, H, W) in [0, 1] → CIE L*a*b* (B, 3, H, W), D65 white point."""
    rgb = images.clamp(0, 1)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", _RGB_TO_XYZ.to(rgb), linear)
    xyz = xyz / _D65_WHITE.to(rgb).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


class Colourfulness(Reward):
    """Colour vividness x hue diversity, Kristiansen & Vågen 2023, Appendix A (after Pinto et al. 2023).

    ``vivid_ratio`` is the fraction of pixels whose squared Lab chroma ``a^2 + b^2`` exceeds
    ``vivid_threshold``; ``hue_entropy`` is the entropy (bits) of the hue angle ``atan2(b, a)``
    over all pixels in ``n_hue_bins`` equal bins. Reward = vivid_ratio * hue_entropy, in
    [0, log2(n_hue_bins)].
    """

    name = "colourfulness"

    def __init__(
        self, vivid_threshold: float = 10.0, n_hue_bins: int = 7, device: object = None
    ) -> None:
        # Squared Lab chroma reaches ~4e4, so larger thresholds would make every image score 0.
        self.vivid_threshold = check_number(
            "colourfulness vivid_threshold", vivid_threshold, 0, 1e5
        )
        self.n_hue_bins = check_int("colourfulness n_hue_bins", n_hue_bins, 1, 4096)
        #: Width of the smooth vivid threshold and temperature of the soft hue histogram of
        #: :meth:`differentiable_score`.
        self.chroma_width, self.hue_tau = 5.0, 0.3

    @torch.no_grad()
    def compute(self, images: torch.Tensor, prompts: list[str]):
        lab = rgb_to_lab(images.detach().float())
        a, b = lab[:, 1], lab[:, 2]
        vivid_ratio = (a**2 + b**2 > self.vivid_threshold).float().mean((1, 2))
        hue = torch.atan2(b, a)
        n = self.n_hue_bins
        # Equal bins over [-pi, pi]; a hue of exactly pi joins the last bin.
        bins = torch.floor((hue + torch.pi) / (2 * torch.pi / n)).long().clamp(0, n - 1)
        counts = F.one_hot(bins.flatten(1), n).sum(1).double()
        probs = counts / counts.sum(-1, keepdim=True)
        entropy = -(probs * torch.log2(probs + np.finfo(float).eps)).sum(-1).float()
        return vivid_ratio * entropy, {"vivid_ratio": vivid_ratio, "hue_entropy": entropy}

    def differentiable_score(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        """A smooth stand-in with the same form (the exact score is piecewise constant, so its
        gradient is zero almost everywhere): the vivid ratio with a sigmoid of the squared chroma
        (width ``chroma_width``) in place of the threshold, and the hue entropy of a soft histogram
        (each pixel's hue shared over the bins by a softmax of cos(hue - bin centre) / ``hue_tau``).
        It tracks the exact score but is not equal to it."""
        x = as_float_image_tensor(images)
        lab = rgb_to_lab(x.float())
        a, b = lab[:, 1], lab[:, 2]
        chroma2 = a**2 + b**2
        vivid = torch.sigmoid((chroma2 - self.vivid_threshold) / self.chroma_width).mean((1, 2))
        # atan2 has an undefined gradient at a = b = 0 (grey pixels): nudge them off the origin.
        hue = torch.atan2(b, a + 1e-6).flatten(1)
        n = self.n_hue_bins
        centres = -torch.pi + (torch.arange(n, device=x.device, dtype=hue.dtype) + 0.5) * (
            2 * torch.pi / n
        )
        share = torch.softmax(torch.cos(hue[..., None] - centres) / self.hue_tau, -1).mean(1)
        entropy = -(share * torch.log2(share + 1e-8)).sum(-1)
        return vivid * entropy


class JpegSize(Reward):
    """JPEG file size in kB (quality ``quality``), as in DDPO: ``sign=-1`` rewards compressible
    images ("jpeg_compressibility"), ``sign=+1`` incompressible ones ("jpeg_incompressibility")."""

    #: Why :meth:`differentiable_score` refuses (see :class:`~diffenvs.rewards.base.Reward`).
    not_differentiable_because = (
        "JPEG encoding (quantisation, entropy coding) has no gradient; fine-tune it with a "
        "policy-gradient agent (diffenvs train ppo --reward jpeg_compressibility)"
    )

    def __init__(self, sign: float = -1.0, quality: int = 95, device: object = None) -> None:
        if isinstance(quality, str):  # "jpeg_compressibility:80" passes the text after the colon
            if not quality.strip().isdigit():
                raise ValueError(
                    f"JPEG quality {quality!r} is not a whole number; write e.g. "
                    "'jpeg_compressibility:80' (quality in 1..100)."
                )
            quality = int(quality.strip())
        self.quality = check_int("JPEG quality", quality, 1, 100)
        self.sign = check_number("JPEG reward sign", sign, -1e6, 1e6)
        if self.sign == 0:
            raise ValueError("JPEG reward sign must be non-zero (-1: compressibility, +1: size).")
        self.name = "jpeg_compressibility" if sign < 0 else "jpeg_incompressibility"

    @torch.no_grad()
    def compute(self, images: torch.Tensor, prompts: list[str]):
        arrays = (
            (images.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        )
        sizes = []
        for array in arrays:
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="JPEG", quality=self.quality)
            sizes.append(buffer.tell() / 1000.0)
        size_kb = torch.tensor(sizes, dtype=torch.float32, device=images.device)
        return self.sign * size_kb, {"size_kb": size_kb}


def default_target_image() -> np.ndarray:
    """The default target of the image rewards: a rendered world scene, uint8 (64, 64, 3)."""
    from diffenvs.world.render import Scene, render

    scene = Scene(count="one", shape="star", colour="yellow", size="large", scene="night sky")
    return np.asarray(render(scene, seed=0))


def load_target_image(target: object = None) -> torch.Tensor:
    """A target image as a float tensor (1, 3, H, W) in [0, 1].

    ``target`` is ``None`` (:func:`default_target_image`), an image file path, a uint8 array
    (H, W, 3), a float tensor (3, H, W) / (1, 3, H, W) in [0, 1], or a PIL image.
    """
    if target is None:
        target = default_target_image()
    if isinstance(target, str | Path):
        path = Path(target).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Target image {str(target)!r} does not exist; pass an image file path."
            )
        try:
            with Image.open(path) as im:
                target = im.convert("RGB")
        except Exception as err:
            raise ValueError(
                f"Could not read target image {path} ({type(err).__name__}: {err}); give a PNG "
                "or JPEG file."
            ) from err
    if isinstance(target, Image.Image):
        target = np.asarray(target.convert("RGB"))
    if isinstance(target, np.ndarray):
        return as_images(_uint8_target(target))
    if isinstance(target, torch.Tensor):
        if target.ndim not in (3, 4) or (target.ndim == 4 and len(target) != 1):
            raise ValueError(
                f"A target image tensor must be (3, H, W) or (1, 3, H, W) in [0, 1]; got "
                f"{summarise(target)}."
            )
        return as_images(target[None] if target.ndim == 3 else target).detach()
    raise ArgumentTypeError(
        f"Cannot use a {type(target).__name__} as a target image; pass a path, a uint8 array "
        "(H, W, 3), a float tensor (3, H, W) in [0, 1] or a PIL image."
    )


def _uint8_target(target: np.ndarray) -> np.ndarray:
    """A target array as uint8 (1, H, W, 3): uint8 as is, floats in [0, 1] scaled by 255."""
    if target.ndim == 3:
        target = target[None]
    if target.ndim != 4 or len(target) != 1 or target.shape[-1] != 3 or min(target.shape[1:3]) < 1:
        raise ValueError(f"A target image array must be H x W x 3 RGB; got {summarise(target)}.")
    if target.dtype == np.uint8:
        return target
    if target.dtype.kind in "iu":
        if target.min() < 0 or target.max() > 255:
            raise ValueError(f"An integer target image must be in 0..255; got {summarise(target)}.")
        return target.astype(np.uint8)
    if target.dtype.kind != "f":
        raise ArgumentTypeError(
            f"A target image must be uint8 or float in [0, 1]; got {summarise(target)}."
        )
    check_finite("The target image", target)
    if target.min() < 0 or target.max() > 1:
        raise ValueError(
            f"A float target image must be in [0, 1]; got {summarise(target)}. Pass uint8 for "
            "0-255 values."
        )
    return (target * 255).round().astype(np.uint8)


def resize_like(target: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    if target.shape[-2:] != images.shape[-2:]:
        target = F.interpolate(
            target, size=images.shape[-2:], mode="bilinear", antialias=True, align_corners=False
        )
    return target.to(images.device, images.dtype)


class TargetRMSE(Reward):
    """Kristiansen & Vågen 2023, Algorithm 1: minus ``scale`` x the adjusted RMSE to a target image.

    The squared error is up-weighted where the target is bright (``loss + loss * target /
    mean(target)``) so that an all-black image is not a cheap local optimum; ``adjust=False`` gives
    the plain RMSE. Differentiable.
    """

    name = "target_rmse"
    differentiable = True

    def __init__(
        self,
        target: object = None,
        *,
        scale: float = 10.0,
        adjust: bool = True,
        device: object = None,
    ) -> None:
        self.target = load_target_image(target)
        self.scale = check_number("target_rmse scale", scale, -1e6, 1e6)
        if not isinstance(adjust, bool | np.bool_):
            raise ArgumentTypeError(
                f"target_rmse adjust must be True or False, got {summarise(adjust)}."
            )
        self.adjust = bool(adjust)

    def compute(self, images: torch.Tensor, prompts: list[str]):
        target = resize_like(self.target, images)
        loss = (images - target) ** 2
        if self.adjust:
            loss = loss + loss * target / target.mean().clamp_min(1e-8)
        rmse = loss.mean((1, 2, 3)).sqrt()
        return -self.scale * rmse, {"rmse": rmse.detach()}


class Zero(Reward):
    """Always 0: for measuring environment overhead, or training on the KL term alone."""

    name = "zero"

    def __init__(self, device: object = None) -> None:
        pass

    def compute(self, images: torch.Tensor, prompts: list[str]):
        return torch.zeros(len(images), device=images.device)

    def differentiable_score(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        """Zeros that are still connected to the images (a KL-only objective backpropagates)."""
        x = as_float_image_tensor(images)
        return (x * 0).sum((1, 2, 3))
