"""The reward interface every environment uses, the registry of names, and standardisation.

A reward scores a batch of images (and their prompts) with one call::

    reward = make_reward("colourfulness")
    scores = reward(images, prompts)            # torch.Tensor, shape (B,)
    out = reward.evaluate(images, prompts)      # scores + per-image details

Images are float tensors (B, 3, H, W) in [0, 1] (what a VAE decode gives) or uint8 arrays
(B, H, W, 3). Rewards built on differentiable models keep the autograd graph
(``reward.differentiable``), so a gradient-based fine-tuner can back-propagate through them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diffenvs.images import ImagesLike, as_images


def _require_float_tensor(images: Any) -> None:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(
            "differentiable_score takes float image tensors (B, 3, H, W) in [0, 1] (a decode that "
            f"keeps the graph); got {type(images).__name__}"
            f"{'' if not isinstance(images, torch.Tensor) else ' of dtype ' + str(images.dtype)}."
        )


def as_float_image_tensor(images: Any) -> torch.Tensor:
    """Float images (B, 3, H, W) in [0, 1] as float32, keeping the graph (checked as
    :func:`~diffenvs.images.as_images` checks them); anything else is a TypeError."""
    _require_float_tensor(images)
    return as_images(images)


def _as_prompts(prompts: Sequence[str] | str | None, batch: int) -> list[str]:
    if prompts is None:
        return [""] * batch
    if isinstance(prompts, str):
        prompts = [prompts] * batch
    if not isinstance(prompts, Sequence | np.ndarray):
        raise TypeError(
            f"Reward prompts must be a str or a list of str, got {type(prompts).__name__}."
        )
    prompts = list(prompts)
    if len(prompts) != batch:
        raise ValueError(
            f"Got {batch} images but {len(prompts)} prompts; pass one prompt per image."
        )
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(
            f"Reward prompts must be str; prompt {bad[0]} is a {type(prompts[bad[0]]).__name__}."
        )
    return prompts


@dataclass
class RewardOutput:
    """Scores (B,) and named per-image details (each a tensor with leading dim B)."""

    rewards: torch.Tensor
    details: dict[str, torch.Tensor] = field(default_factory=dict)


class NotDifferentiableError(TypeError):
    """A reward was asked for gradients it cannot give (e.g. JPEG size)."""


class Reward:
    """Base class: subclasses implement :meth:`compute` on float images (B, 3, H, W) in [0, 1].

    Gradient-based fine-tuners call :meth:`differentiable_score`; a reward declares that it can
    answer with ``differentiable = True`` (its scores keep the graph) or by overriding
    :meth:`differentiable_score` with a smooth stand-in (colourfulness). Others refuse with
    :class:`NotDifferentiableError`.
    """

    name: str = "reward"
    #: True when gradients flow from the scores back to the images.
    differentiable: bool = False
    #: What the error of :meth:`differentiable_score` says for a reward without gradients.
    not_differentiable_because: str = "its score cannot carry gradients to the image"

    @property
    def supports_gradients(self) -> bool:
        """Whether :meth:`differentiable_score` gives gradients (exact or through a stand-in)."""
        return (
            self.differentiable
            or type(self).differentiable_score is not Reward.differentiable_score
        )

    def differentiable_score(
        self, images: torch.Tensor, prompts: Sequence[str] | str | None = None
    ) -> torch.Tensor:
        """Scores (B,) that keep the autograd graph back to float ``images`` (B, 3, H, W) in [0, 1].

        Raises :class:`NotDifferentiableError` for a reward that cannot give gradients.
        """
        if not self.differentiable:
            raise NotDifferentiableError(
                f"Reward {self.name!r} is not differentiable ({self.not_differentiable_because}), "
                "so direct reward fine-tuning (ReFL, DRaFT, AlignProp) cannot use it. "
                "Use a differentiable reward (clip_score, clip_image, aesthetic, colourfulness, "
                "target_rmse, oracle, pickscore, learned:DIR) or a policy-gradient agent (ppo)."
            )
        return self.evaluate(as_float_image_tensor(images), prompts).rewards

    def compute(
        self, images: torch.Tensor, prompts: list[str]
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def evaluate(
        self, images: ImagesLike, prompts: Sequence[str] | str | None = None
    ) -> RewardOutput:
        """Scores and details for a batch; raises if the reward is not one finite number per image."""
        x = as_images(images)
        if len(x) == 0:
            raise ValueError("Reward got an empty batch of images; pass at least one image.")
        out = self.compute(x, _as_prompts(prompts, len(x)))
        rewards, details = out if isinstance(out, tuple) else (out, {})
        rewards = (
            torch.as_tensor(rewards).reshape(-1)
            if not isinstance(rewards, torch.Tensor)
            else rewards
        )
        if rewards.shape != (len(x),):
            raise ValueError(
                f"Reward {self.name!r} returned shape {tuple(rewards.shape)} for {len(x)} images; a "
                "reward must return one score per image, shape (B,)."
            )
        bad = ~torch.isfinite(rewards.detach())
        if bool(bad.any()):
            raise ValueError(
                f"Reward {self.name!r} returned non-finite scores {rewards.detach()[bad].tolist()} "
                f"for images {torch.nonzero(bad).flatten().tolist()}; check the reward function."
            )
        return RewardOutput(rewards.float(), dict(details))

    def __call__(
        self, images: ImagesLike, prompts: Sequence[str] | str | None = None
    ) -> torch.Tensor:
        return self.evaluate(images, prompts).rewards

    def to(self, device: str | torch.device) -> Reward:
        """Move any model the reward holds (no-op for model-free rewards)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FunctionReward(Reward):
    """A user function ``fn(images, prompts) -> scores (B,)`` (or ``(scores, details)``) as a Reward.

    ``images`` reach ``fn`` as float tensors (B, 3, H, W) in [0, 1]; scores may be a tensor, a
    numpy array or a list.
    """

    def __init__(
        self, fn: Callable[..., Any], name: str | None = None, *, differentiable: bool = False
    ) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionReward needs a callable, got {type(fn).__name__}.")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")
        # Only the caller knows whether fn keeps the graph (pure torch on the images).
        self.differentiable = bool(differentiable)

    def compute(self, images: torch.Tensor, prompts: list[str]):
        out = self.fn(images, prompts)
        scores, details = out if isinstance(out, tuple) else (out, {})
        if not isinstance(scores, torch.Tensor):
            scores = torch.as_tensor(np.asarray(scores, dtype=np.float32))
        if scores.ndim > 1 and scores.numel() == len(images):
            scores = scores.reshape(-1)  # accept (B, 1) as well as (B,)
        return scores, {k: torch.as_tensor(v) for k, v in details.items()}


class Standardised(Reward):
    """Reward standardisation, Kristiansen & Vågen 2023, eq. 5.2: ``(r - mu_r) / sigma_r``.

    ``mean``/``std`` are the reward's statistics on a reference set (the reward model's training
    data, or base-model samples); :meth:`fit` computes them. The raw score stays in the details.
    """

    def __init__(self, reward: Reward, mean: float, std: float) -> None:
        mean, std = float(mean), float(std)
        if not np.isfinite(mean) or not np.isfinite(std) or std <= 0:
            raise ValueError(
                f"Reward standardisation needs a finite mean and a positive finite std; got "
                f"mean={mean}, std={std}. Fit them with Standardised.fit(reward, images, prompts)."
            )
        self.reward, self.mean, self.std = reward, mean, std
        self.name = f"standardised({reward.name})"
        self.differentiable = reward.differentiable

    @classmethod
    def fit(
        cls,
        reward: Reward,
        images: ImagesLike,
        prompts: Sequence[str] | str | None = None,
        *,
        batch_size: int = 64,
    ) -> Standardised:
        """Standardise ``reward`` with its mean and std over a reference set of images."""
        x = as_images(images)
        p = _as_prompts(prompts, len(x))
        if len(x) < 2:
            raise ValueError(
                "Standardised.fit needs at least 2 reference images to estimate a std."
            )
        with torch.no_grad():
            chunks = range(0, len(x), batch_size)
            scores = torch.cat(
                [reward(x[i : i + batch_size], p[i : i + batch_size]) for i in chunks]
            )
        std = float(scores.std(unbiased=False))
        if std == 0:
            raise ValueError(
                f"Reward {reward.name!r} gives the same score ({float(scores[0])}) to all "
                f"{len(x)} reference images, so it cannot be standardised; use more varied images."
            )
        return cls(reward, float(scores.mean()), std)

    def compute(self, images: torch.Tensor, prompts: list[str]):
        out = self.reward.evaluate(images, prompts)
        return (out.rewards - self.mean) / self.std, {"raw": out.rewards, **out.details}

    @property
    def supports_gradients(self) -> bool:
        return self.reward.supports_gradients

    def differentiable_score(
        self, images: torch.Tensor, prompts: Sequence[str] | str | None = None
    ) -> torch.Tensor:
        return (self.reward.differentiable_score(images, prompts) - self.mean) / self.std

    def to(self, device: str | torch.device) -> Standardised:
        self.reward.to(device)
        return self

    def __repr__(self) -> str:
        return f"Standardised({self.reward!r}, mean={self.mean:.4g}, std={self.std:.4g})"


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

RewardFactory = Callable[..., Reward]
_REGISTRY: dict[str, tuple[RewardFactory, str]] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register_reward(
    name: str, factory: RewardFactory, *, description: str = "", aliases: Sequence[str] = ()
) -> None:
    """Make ``factory(arg, **kwargs)`` available as ``make_reward("name")`` / ``"name:arg"``.

    ``arg`` is the text after the first ``:`` of the name (``None`` when absent), e.g. the weights
    path of ``"aesthetic:/path/w.safetensors"``.
    """
    key = _key(name)
    _REGISTRY[key] = (factory, description)
    for alias in aliases:
        _ALIASES[_key(alias)] = key


def available_rewards() -> dict[str, str]:
    """Registered reward names with one-line descriptions."""
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


class SumReward(Reward):
    """A weighted sum of rewards, ``sum_i w_i r_i(images, prompts)``: e.g. a style the prompts do
    not ask for plus prompt following (``make_reward("oracle:pastel+oracle")``), so that a policy
    gains the style without giving up the prompt. Each term's score is kept in the details
    (``term:NAME``). Differentiable when every term is."""

    def __init__(self, terms: Sequence[tuple[float, Reward]]) -> None:
        if len(terms) < 2:
            raise ValueError("SumReward needs at least two (weight, reward) terms.")
        for w, r in terms:
            if not isinstance(r, Reward) or not np.isfinite(float(w)):
                raise ValueError(
                    f"SumReward terms are (finite weight, Reward) pairs; got ({w!r}, {r!r})."
                )
        self.terms = [(float(w), r) for w, r in terms]
        self.name = "+".join(r.name if w == 1 else f"{w:g}*{r.name}" for w, r in self.terms)

    def compute(self, images: torch.Tensor, prompts: list[str]):
        total, details = None, {}
        for w, r in self.terms:
            score = r.evaluate(images, prompts).rewards
            details[f"term:{r.name}"] = score.detach()
            total = w * score if total is None else total + w * score
        return total, details

    @property
    def supports_gradients(self) -> bool:
        return all(r.supports_gradients for _, r in self.terms)

    def differentiable_score(
        self, images: torch.Tensor, prompts: Sequence[str] | str | None = None
    ) -> torch.Tensor:
        return sum(w * r.differentiable_score(images, prompts) for w, r in self.terms)

    def to(self, device: str | torch.device) -> SumReward:
        for _, r in self.terms:
            r.to(device)
        return self


def _sum_of_rewards(spec: str, **kwargs: Any) -> SumReward:
    """``"A+B"`` or ``"A+0.5*B"``: each term a reward name (weights default to 1)."""
    terms = []
    for part in spec.split("+"):
        weight, star, name = part.strip().partition("*")
        if not star:
            weight, name = "1", weight
        try:
            w = float(weight)
        except ValueError:
            raise ValueError(
                f"In the reward sum {spec!r}, {part.strip()!r} is not NAME or WEIGHT*NAME (e.g. "
                "'oracle:pastel+0.5*oracle')."
            ) from None
        if not name.strip():
            raise ValueError(f"The reward sum {spec!r} has an empty term; write e.g. 'A+B'.")
        terms.append((w, make_reward(name.strip(), **kwargs)))
    return SumReward(terms)


def make_reward(spec: str | Reward | Callable[..., Any], **kwargs: Any) -> Reward:
    """A :class:`Reward` from a registered name (``"clip_score"``, ``"oracle:red"``, ...), a sum of
    names (``"oracle:pastel+oracle"``, ``"colourfulness+0.5*oracle"``: :class:`SumReward`), a Reward
    instance, or a plain callable ``fn(images, prompts) -> scores``.

    Keyword arguments go to the reward's constructor (e.g. ``target=...``, ``clip=...``,
    ``device=...``).
    """
    if isinstance(spec, Reward):
        if kwargs:
            raise ValueError(
                f"Got a Reward instance ({spec!r}) and constructor arguments {sorted(kwargs)}; "
                "configure the instance directly or pass the reward by name."
            )
        return spec
    if not isinstance(spec, str):
        if callable(spec):
            kwargs.pop("device", None)
            if kwargs:
                raise ValueError(
                    f"Arguments {sorted(kwargs)} cannot be applied to a reward function."
                )
            return FunctionReward(spec)
        raise TypeError(
            f"reward must be a name, a Reward or a callable(images, prompts); got {type(spec).__name__}."
        )
    if "+" in spec:
        return _sum_of_rewards(spec, **kwargs)
    name, sep, arg = spec.partition(":")
    key = _ALIASES.get(_key(name), _key(name))
    if key not in _REGISTRY:
        known = sorted([*_REGISTRY, *_ALIASES])
        near = difflib.get_close_matches(_key(name), known, n=3)
        hint = f" Did you mean {near}?" if near else ""
        raise ValueError(
            f"Unknown reward {spec!r}.{hint} Known rewards: {sorted(_REGISTRY)} (aliases: "
            f"{sorted(_ALIASES)}); or pass a Reward instance or a callable(images, prompts) -> (B,) scores."
        )
    factory, _ = _REGISTRY[key]
    reward = factory(arg.strip() if sep else None, **kwargs)
    if not isinstance(reward, Reward):
        raise TypeError(
            f"The factory registered for {key!r} returned {type(reward).__name__}, not a Reward."
        )
    return reward
