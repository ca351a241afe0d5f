"""The reward library: batched image rewards, usable by name in ``gym.make(..., reward="...")``.

============================  ==================================================================
name (aliases)                what it scores
============================  ==================================================================
``clip_score`` (``clip``)     CLIP cosine similarity of image and prompt
``clip_image:PATH``           CLIP cosine similarity to a target image (default: a world render)
``colourfulness``             vividness x hue entropy, Kristiansen & Vågen 2023, Appendix A
``target_rmse:PATH``          minus 10 x adjusted RMSE to a target image, Kristiansen & Vågen 2023, Algorithm 1
``jpeg_compressibility``      minus JPEG size in kB (DDPO)
``jpeg_incompressibility``    JPEG size in kB (DDPO)
``aesthetic:PATH``            LAION aesthetic MLP over CLIP image embeddings
``oracle``                    world oracle: does the image show what its prompt names?
``oracle:TEXT``               world oracle: does the image show TEXT (e.g. ``oracle:red``)?
``oracle:prompt:ATTRS``       world oracle: prompt following on ATTRS only (``oracle:prompt:count``)
``pickscore``                 PickScore (needs the real weights)
``learned:PATH``              a preference reward model trained on rankings (docs/preference.md)
``zero``                      always 0 (overhead measurements, KL-only training)
============================  ==================================================================

:class:`Standardised` applies Kristiansen & Vågen 2023, eq. 5.2. See ``docs/rewards.md``.

Direct reward fine-tuning (``agents/direct``) calls ``reward.differentiable_score(images,
prompts)`` on float images that keep the autograd graph: every reward above but the JPEG ones
gives gradients (``reward.supports_gradients``); colourfulness through a smooth stand-in of the
same form, ``oracle`` only with ``soft=True``. The rest raise :class:`NotDifferentiableError`.
"""

from __future__ import annotations

from diffenvs.rewards.base import (
    FunctionReward,
    NotDifferentiableError,
    Reward,
    RewardOutput,
    Standardised,
    as_images,
    available_rewards,
    make_reward,
    register_reward,
)
from diffenvs.rewards.image import (
    Colourfulness,
    JpegSize,
    TargetRMSE,
    Zero,
    default_target_image,
    load_target_image,
    rgb_to_lab,
)
from diffenvs.rewards.pretrained import (
    AestheticScore,
    ClipImageSimilarity,
    ClipScore,
    LearnedReward,
    OracleReward,
    PickScoreReward,
    parse_attribute_target,
)


def _no_arg(cls, name: str):
    def factory(arg: str | None = None, **kwargs):
        if arg:
            raise ValueError(
                f"Reward {name!r} takes no ':argument' (got {arg!r}); pass keyword arguments instead."
            )
        return cls(**kwargs)

    return factory


def _with_arg(cls, key: str):
    def factory(arg: str | None = None, **kwargs):
        if arg is not None:
            if key in kwargs:
                raise ValueError(
                    f"{key!r} was given both after ':' ({arg!r}) and as a keyword argument."
                )
            kwargs[key] = arg
        return cls(**kwargs)

    return factory


register_reward(
    "clip_score",
    _no_arg(ClipScore, "clip_score"),
    description="CLIP image-prompt cosine similarity",
    aliases=("clip", "clipscore"),
)
register_reward(
    "clip_image",
    _with_arg(ClipImageSimilarity, "target"),
    description="CLIP image-image cosine similarity to a target image",
    aliases=("clip_image_similarity",),
)
register_reward(
    "colourfulness",
    _no_arg(Colourfulness, "colourfulness"),
    description="vivid-pixel ratio x hue entropy (Kristiansen & Vågen 2023, App. A)",
    aliases=("colorfulness",),
)
register_reward(
    "target_rmse",
    _with_arg(TargetRMSE, "target"),
    description="-10 x adjusted RMSE to a target image (Kristiansen & Vågen 2023, Alg. 1)",
    aliases=("target_image",),
)
register_reward(
    "jpeg_compressibility",
    lambda arg=None, **kw: JpegSize(sign=-1.0, **({"quality": arg} if arg else {}), **kw),
    description="minus JPEG size in kB",
    aliases=("compressibility",),
)
register_reward(
    "jpeg_incompressibility",
    lambda arg=None, **kw: JpegSize(sign=1.0, **({"quality": arg} if arg else {}), **kw),
    description="JPEG size in kB",
    aliases=("incompressibility",),
)
register_reward(
    "aesthetic",
    _with_arg(AestheticScore, "weights"),
    description="LAION aesthetic MLP on CLIP embeddings",
    aliases=("aesthetic_score",),
)
register_reward(
    "oracle",
    _with_arg(OracleReward, "target"),
    description="world-oracle probability of the prompt's (or ':TEXT') attributes",
    aliases=("oracle_prompt", "semantic"),
)
register_reward(
    "pickscore", _with_arg(PickScoreReward, "model"), description="PickScore preference model"
)
register_reward(
    "learned",
    _with_arg(LearnedReward, "path"),
    description="preference reward model trained on rankings (a model folder)",
    aliases=("preference",),
)
register_reward("zero", _no_arg(Zero, "zero"), description="always 0", aliases=("none",))

__all__ = [
    "AestheticScore",
    "ClipImageSimilarity",
    "ClipScore",
    "Colourfulness",
    "FunctionReward",
    "JpegSize",
    "LearnedReward",
    "NotDifferentiableError",
    "OracleReward",
    "PickScoreReward",
    "Reward",
    "RewardOutput",
    "Standardised",
    "TargetRMSE",
    "Zero",
    "as_images",
    "available_rewards",
    "default_target_image",
    "load_target_image",
    "make_reward",
    "parse_attribute_target",
    "register_reward",
    "rgb_to_lab",
]
