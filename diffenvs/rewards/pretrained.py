"""Rewards computed by pretrained (frozen) models: CLIP scores, the aesthetic MLP, the world's
attribute oracle, PickScore and preference reward models trained here. Models come from the
process-wide :mod:`diffenvs.models.cache`, so every env and reward shares one copy of each."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from diffenvs.models.cache import shared, shared_clip, shared_oracle
from diffenvs.rewards.base import Reward
from diffenvs.rewards.image import load_target_image
from diffenvs.world.attributes import ATTRIBUTE_CLASSES, MODIFIER_CATEGORY


class ClipScore(Reward):
    """Cosine similarity of CLIP image and prompt embeddings (Gudibande & Zhu, eq. 5, DDPO's prompt
    alignment), in [-1, 1]. Differentiable."""

    name = "clip_score"
    differentiable = True

    def __init__(self, clip: object = "world", device: object = None) -> None:
        self.clip = shared_clip(clip, device)

    def compute(self, images: torch.Tensor, prompts: list[str]):
        with torch.no_grad():
            text = self.clip.encode_texts(prompts)
        return (self.clip.encode_images(images) * text).sum(-1)

    def to(self, device: str | torch.device) -> ClipScore:
        self.clip.to(device)
        return self


class ClipImageSimilarity(Reward):
    """Cosine similarity of each image's CLIP embedding with a target image's (Gudibande & Zhu, eq. 4).

    ``target`` is anything :func:`~diffenvs.rewards.image.load_target_image` takes (default: a
    rendered world scene). Differentiable.
    """

    name = "clip_image"
    differentiable = True

    def __init__(
        self, target: object = None, *, clip: object = "world", device: object = None
    ) -> None:
        self.clip = shared_clip(clip, device)
        with torch.no_grad():
            self.target_embedding = self.clip.encode_images(load_target_image(target))

    def compute(self, images: torch.Tensor, prompts: list[str]):
        target = self.target_embedding.to(self.clip.device)
        return (self.clip.encode_images(images) * target).sum(-1)

    def to(self, device: str | torch.device) -> ClipImageSimilarity:
        self.clip.to(device)
        return self


class AestheticScore(Reward):
    """The LAION aesthetic predictor: an MLP (or linear head) on CLIP image embeddings.

    ``weights`` is a file :func:`diffenvs.models.load_aesthetic` reads (safetensors, weights-only
    .pth, ``hf-hub:org/repo/file``) or a loaded module; ``clip`` must produce the embedding width
    the head was trained on (ViT-L/14 → 768 for the released LAION weights).
    """

    name = "aesthetic"
    differentiable = True

    def __init__(
        self, weights: object = None, *, clip: object = "world", device: object = None
    ) -> None:
        from diffenvs.models import load_aesthetic

        if weights is None:
            raise ValueError(
                "The aesthetic reward needs predictor weights: use reward='aesthetic:PATH' or "
                "reward_kwargs={'weights': PATH} with a LAION aesthetic MLP file (e.g. "
                "sac+logos+ava1-l14-linearMSE.pth) and clip='ViT-L-14/openai' (see docs/rewards.md)."
            )
        self.clip = shared_clip(clip, device)
        if isinstance(weights, torch.nn.Module):
            self.head = weights.to(self.clip.device).eval()
        else:
            self.head = shared(
                "aesthetic",
                str(weights),
                lambda: load_aesthetic(str(weights), device=device or "cpu"),
                device=device,
            )
        expected = getattr(self.head, "embed_dim", None)
        with torch.no_grad():
            width = self.clip.encode_images(torch.zeros(1, 3, 32, 32)).shape[-1]
        if expected is not None and expected != width:
            raise ValueError(
                f"The aesthetic predictor expects {expected}-d CLIP embeddings but CLIP "
                f"{getattr(self.clip, 'name', clip)!r} gives {width}-d ones; pass the CLIP it was "
                "trained on (clip='ViT-L-14/openai' for the released LAION weights)."
            )

    def compute(self, images: torch.Tensor, prompts: list[str]):
        return self.head(self.clip.encode_images(images)).float()

    def to(self, device: str | torch.device) -> AestheticScore:
        self.clip.to(device)
        self.head.to(device)
        return self


def _index(attribute: str, value: str) -> int:
    classes = ATTRIBUTE_CLASSES[attribute]
    if value not in classes:
        raise ValueError(f"{value!r} is not a value of {attribute!r}; known: {list(classes)}.")
    return classes.index(value)


def parse_attribute_target(text: str) -> list[tuple[str, int]]:
    """World attributes an image should show, as (attribute, class index) pairs.

    Accepts ``"colour=red, shape=star"`` pairs, or free text read by the world's prompt parser
    (``"a red star, glowing"``); modifiers map to their category (``"glowing"`` → effect).
    """
    from diffenvs.world.render import parse_prompt

    pairs: list[tuple[str, int]] = []
    if "=" in text:
        for item in re.split(r"[,;&]\s*|\s+and\s+", text.strip()):
            if not item.strip():
                continue
            attr, sep, value = (s.strip() for s in item.partition("="))
            if not sep or attr not in ATTRIBUTE_CLASSES:
                raise ValueError(
                    f"Cannot read {item!r} in oracle target {text!r}: write attribute=value with an "
                    f"attribute from {list(ATTRIBUTE_CLASSES)}."
                )
            pairs.append((attr, _index(attr, value)))
        return pairs
    for attr, value in parse_prompt(text).items():
        if attr == "modifiers":
            pairs += [(MODIFIER_CATEGORY[m], _index(MODIFIER_CATEGORY[m], m)) for m in value]
        else:
            pairs.append((attr, _index(attr, str(value))))
    return pairs


class OracleReward(Reward):
    """Semantic reward from the world's attribute oracle (the detector of Marathe's rewards).

    * ``target=None``: prompt following; the attributes each image's prompt names are checked.
    * ``target="red"`` / ``"a red star"`` / ``"colour=red"``: a fixed property ("the image shows a
      red object"), whatever the prompt.
    * ``target="prompt:count"`` (or ``"prompt:count,shape"``): prompt following restricted to
      these attributes; a prompt naming none of them scores 0.

    The score is the mean oracle probability of the wanted classes (``soft=True``, differentiable)
    or the fraction the oracle's arg-max gets right (``soft=False``). Details: ``accuracy`` (hard
    fraction) and ``n_attributes`` (how many were checked; 0 gives a score of 0).
    """

    name = "oracle"
    differentiable = True

    def __init__(
        self,
        target: str | None = None,
        *,
        soft: bool = True,
        oracle: object = None,
        device: object = None,
    ) -> None:
        self.fixed = None
        self.only: tuple[str, ...] | None = None
        if target is not None and str(target).startswith("prompt:"):
            self.only = tuple(a.strip() for a in str(target)[7:].split(",") if a.strip())
            unknown = [a for a in self.only if a not in ATTRIBUTE_CLASSES]
            if unknown or not self.only:
                raise ValueError(
                    f"Oracle target {target!r}: after 'prompt:' list the prompt's attributes to "
                    f"check, comma-separated, from {list(ATTRIBUTE_CLASSES)} (e.g. 'prompt:count')."
                )
            self.name = f"oracle:{target}"
        elif target is not None:
            self.fixed = parse_attribute_target(str(target))
            if not self.fixed:
                raise ValueError(
                    f"Oracle target {target!r} names no world attribute; write e.g. 'red', "
                    f"'a red star' or 'colour=red' (attributes: {list(ATTRIBUTE_CLASSES)})."
                )
            self.name = f"oracle:{target}"
        if oracle is None or isinstance(oracle, str):
            oracle = shared_oracle(oracle, device)
        self.oracle = oracle.eval()
        self.soft = bool(soft)

    def compute(self, images: torch.Tensor, prompts: list[str]):
        device = next(self.oracle.parameters()).device
        x = images.to(device)
        if x.shape[-2:] != (64, 64):  # the oracle reads the world's 64 x 64 images
            x = F.interpolate(
                x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False
            )
        logits = self.oracle(x)
        probs = {a: v.softmax(-1) for a, v in logits.items()}
        targets = (
            [self.fixed] * len(x)
            if self.fixed is not None
            else [parse_attribute_target(p) for p in prompts]
        )
        if self.only is not None:
            targets = [[(a, k) for a, k in pairs if a in self.only] for pairs in targets]
        soft, hard, count = [], [], []
        for i, pairs in enumerate(targets):
            if not pairs:
                soft.append(x.new_zeros(()))
                hard.append(x.new_zeros(()))
            else:
                p = torch.stack([probs[a][i, k] for a, k in pairs])
                soft.append(p.mean())
                hard.append(
                    torch.stack([(logits[a][i].argmax() == k).float() for a, k in pairs]).mean()
                )
            count.append(len(pairs))
        soft_t, hard_t = torch.stack(soft), torch.stack(hard).detach()
        details = {"accuracy": hard_t, "n_attributes": torch.tensor(count, device=device)}
        return (soft_t if self.soft else hard_t), details

    @property
    def supports_gradients(self) -> bool:
        return self.soft

    def differentiable_score(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        if not self.soft:
            from diffenvs.rewards.base import NotDifferentiableError

            raise NotDifferentiableError(
                f"Reward {self.name!r} with soft=False scores the oracle's arg-max (no gradient); "
                "make it with soft=True (the default) to fine-tune on its class probabilities."
            )
        return super().differentiable_score(images, prompts)

    def to(self, device: str | torch.device) -> OracleReward:
        self.oracle.to(device)
        return self


class PickScoreReward(Reward):
    """PickScore (a preference-tuned CLIP-H) for real checkpoints; needs its weights locally."""

    name = "pickscore"
    differentiable = True

    def __init__(self, model: str | None = None, device: object = None) -> None:
        from diffenvs.models import PICKSCORE_MODEL, load_pickscore

        name = model or PICKSCORE_MODEL
        self.model = shared(
            "pickscore", name, lambda: load_pickscore(name, device=device or "cpu"), device=device
        )

    def compute(self, images: torch.Tensor, prompts: list[str]):
        return self.model.score(images, prompts).float()


class LearnedReward(Reward):
    """A preference reward model trained with ``diffenvs preference train`` (a model folder).

    Scores are standardised with the statistics saved at training time (Kristiansen & Vågen 2023, eq. 5.2).
    """

    name = "learned"
    differentiable = True

    def __init__(self, path: str | None = None, device: object = None) -> None:
        # Imported here: `import diffenvs.rewards` should not load the preference package.
        from diffenvs.preference.reward_model import load_reward_model

        if not path:
            raise ValueError(
                "The learned reward needs a model folder: reward='learned:PATH' (train one with "
                "`diffenvs preference train`)."
            )
        dev = str(device or "cpu")
        self.model = shared("learned", path, lambda: load_reward_model(path, dev), device=dev)
        self.name = f"learned:{path}"

    def compute(self, images: torch.Tensor, prompts: list[str]):
        return self.model.score(images, prompts).to(images.device)

    def differentiable_score(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        """The model's standardised scores with gradients to the images (its frozen backbone and
        head run with the graph)."""
        from diffenvs.rewards.base import _as_prompts, as_float_image_tensor

        x = as_float_image_tensor(images)
        return self.model.differentiable_score(x, _as_prompts(prompts, len(x))).to(x.device)
