"""What ``GrammarGrid-v0`` sees: each grid state's image, the detector's reading of it, its CLIP
embedding, and the encoding of a target image to grid coordinates.

Images, oracle readings and CLIP embeddings are keyed by prompt and kept in the process-wide
:data:`~diffenvs.models.cache.MODEL_CACHE` (namespace :data:`CACHE_KIND`), shared by every grid
with the same image source and generation seed: a state is generated, read by the oracle and
embedded by CLIP once per process (Marathe: one fixed seed per state, since dynamic seeds give
inconsistent rewards).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from diffenvs.errors import ArgumentTypeError, check_finite, summarise
from diffenvs.grammar import Grammar
from diffenvs.models.cache import MODEL_CACHE, shared_clip, shared_oracle
from diffenvs.world.attributes import ATTRIBUTE_CLASSES, MODIFIER_CATEGORIES, MODIFIER_CATEGORY
from diffenvs.world.render import Scene, parse_prompt, render

__all__ = [
    "CACHE_KIND",
    "GridPerception",
    "as_uint8_image",
    "read_target_image",
    "scene_of_state",
]

#: The grid's namespace in the model cache; ``diffenvs.models.clear_caches(CACHE_KIND)`` drops
#: its image generators and per-prompt stores.
CACHE_KIND = "grammar_grid"
_T = TypeVar("_T")


def _shared(key: tuple[Any, ...], build: Callable[[], _T]) -> _T:
    return MODEL_CACHE.get((CACHE_KIND, *key), build)


def scene_of_state(grammar: Grammar, coords: Sequence[int]) -> Scene:
    """The world :class:`Scene` a grid state's prompt describes (for the procedural renderer).

    The prompt is read with the world's parser, then every slot tied to a world attribute sets that
    attribute directly, so surface forms such as "an ocean" or "circles" cannot be misread.
    """
    found = parse_prompt(grammar.render(coords))
    kwargs: dict[str, Any] = {k: v for k, v in found.items() if k != "modifiers"}
    mods = {MODIFIER_CATEGORY[m]: m for m in found.get("modifiers", [])}
    for slot, c in zip(grammar.slots, coords, strict=True):
        if slot.attribute is None:
            continue
        value = ATTRIBUTE_CLASSES[slot.attribute][slot.world_class(slot.values[c])]
        if slot.attribute in MODIFIER_CATEGORIES:
            mods.pop(slot.attribute, None)
            if value != "none":
                mods[slot.attribute] = value
        else:
            kwargs[slot.attribute] = value
    return Scene(**kwargs, modifiers=tuple(mods.values()))


class GridPerception:
    """Images and detector readings of a grammar grid's states, by flat state index.

    Args:
        grammar: the grid.
        model: ``"renderer"``, a pipeline name/folder, or an ``ImageGenerator`` (anything with
            its ``images(prompts, seeds)``).
        generation_seed: the fixed seed every state's image is generated with.
        num_inference_steps, guidance_scale: sampling settings of a pipeline given by name.
        clip: CLIP name for embeddings and the CLIP target encoder.
        use_clip: whether :meth:`perceive` embeds images with CLIP (the CLIP reward) instead of
            reading them with the detector.
        detector: ``"oracle"`` or ``"exact"`` (the state's own coordinates).
    """

    def __init__(
        self,
        grammar: Grammar,
        *,
        model: Any,
        generation_seed: int,
        num_inference_steps: int,
        guidance_scale: float,
        clip: str,
        use_clip: bool,
        detector: str,
    ) -> None:
        self.grammar, self.clip_name = grammar, clip
        self.generation_seed, self.use_clip, self.detector = generation_seed, use_clip, detector
        self.n_axes = len(grammar.shape)
        self._generator = None
        if isinstance(model, str) and model == "renderer":
            self.model_name = "renderer"
            model_key: tuple[Any, ...] = ("renderer",)
        elif hasattr(model, "images"):  # an ImageGenerator (or anything with its interface)
            self.model_name = type(model).__name__
            self._generator = model
            model_key = ("generator", model)
        else:
            from diffenvs.generate import ImageGenerator

            self.model_name = str(model)
            model_key = (
                "pipeline",
                self.model_name,
                int(num_inference_steps),
                float(guidance_scale),
            )
            self._generator = _shared(
                model_key,
                lambda: ImageGenerator(
                    self.model_name,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                ),
            )
        key = (*model_key, self.generation_seed)
        self.image_store: dict[str, np.ndarray] = _shared(("images", *key), dict)
        self.oracle_store: dict[str, dict[str, int]] = _shared(("oracle", *key), dict)
        self.embed_store: dict[str, np.ndarray] = _shared(("clip", str(clip), *key), dict)
        # Per grid: flat state index → prompt, and → detector reading (coordinate per slot, -1 when
        # the detector sees a value that is not on the slot's axis).
        self._prompts: dict[int, str] = {}
        self.readings: dict[int, np.ndarray] = {}
        self._world_classes: list[np.ndarray] | None = None

    @property
    def state_classes(self) -> list[np.ndarray]:
        """Per slot, the oracle class index of each value (only needed when the oracle is used)."""
        if self._world_classes is None:
            self._world_classes = [
                np.array([s.world_class(v) if s.attribute else -1 for v in s.values])
                for s in self.grammar.slots
            ]
        return self._world_classes

    def oracle(self) -> Any:
        return shared_oracle()

    def clip(self) -> Any:
        return shared_clip(self.clip_name)

    def prompt(self, idx: int) -> str:
        """The prompt of the state with flat index ``idx``."""
        if idx not in self._prompts:
            self._prompts[idx] = self.grammar.render(self.grammar.unindex(idx))
        return self._prompts[idx]

    def state_image(self, idx: int) -> np.ndarray:
        """The (cached, read-only) image of state ``idx``, uint8 (H, W, 3)."""
        self.generate([idx])
        return self.image_store[self.prompt(idx)]

    def generate(self, indices: list[int]) -> None:
        """Generate the images of states (by flat index) that no grid has generated yet."""
        todo = {self.prompt(i): i for i in indices if self.prompt(i) not in self.image_store}
        if not todo:
            return
        if self._generator is None:
            g = self.grammar
            imgs = [
                np.asarray(render(scene_of_state(g, g.unindex(i)), self.generation_seed))
                for i in todo.values()
            ]
        else:
            imgs = list(self._generator.images(list(todo), [self.generation_seed] * len(todo)))
        for p, img in zip(todo, imgs, strict=True):
            img = np.array(img, dtype=np.uint8)
            img.setflags(write=False)  # cached and shared: callers must not change it in place
            self.image_store[p] = img

    def embedding(self, idx: int) -> np.ndarray:
        """The CLIP image embedding of state ``idx`` (after :meth:`perceive`)."""
        return self.embed_store[self.prompt(idx)]

    def perceive(self, indices: list[int]) -> None:
        """Fill the detector readings or CLIP embeddings of states, in one batch."""
        if self.use_clip:
            todo_idx = {
                self.prompt(i): i for i in indices if self.prompt(i) not in self.embed_store
            }
            todo = list(todo_idx)
            if todo:
                self.generate(list(todo_idx.values()))
                with torch.no_grad():
                    emb = self.clip().encode_images(np.stack([self.image_store[p] for p in todo]))
                for p, e in zip(todo, emb.cpu().numpy(), strict=True):
                    self.embed_store[p] = e
            return
        todo = [i for i in dict.fromkeys(indices) if i not in self.readings]
        if not todo:
            return
        if self.detector == "exact":
            for i in todo:  # the state's own values: its coordinates are its reading
                self.readings[i] = np.array(self.grammar.unindex(i), dtype=np.int64)
            return
        prompts = [self.prompt(i) for i in todo]
        unread_idx = {
            p: i for p, i in zip(prompts, todo, strict=True) if p not in self.oracle_store
        }
        unread = list(unread_idx)
        if unread:
            self.generate(list(unread_idx.values()))
            pred = self.oracle().predict(np.stack([_as_64(self.image_store[p]) for p in unread]))
            for k, p in enumerate(unread):
                self.oracle_store[p] = {a: int(v[k]) for a, v in pred.items()}
        for i, p in zip(todo, prompts, strict=True):
            seen = self.oracle_store[p]
            reading = np.full(self.n_axes, -1, dtype=np.int64)
            for a, slot in enumerate(self.grammar.slots):
                # Map the oracle's class back to this slot's coordinate; -1 if it is not a value.
                hits = np.flatnonzero(self.state_classes[a] == seen[slot.attribute])
                reading[a] = hits[0] if len(hits) else -1
            self.readings[i] = reading

    def precompute(self, batch_size: int = 256) -> None:
        """Generate and perceive every state now (in batches) instead of on first visit."""
        all_idx = list(range(self.grammar.n_states))
        for start in range(0, len(all_idx), batch_size):
            chunk = all_idx[start : start + batch_size]
            self.generate(chunk)
            self.perceive(chunk)

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """The CLIP embedding of one uint8 (H, W, 3) image."""
        with torch.no_grad():
            return self.clip().encode_images(np.array(image[None])).cpu().numpy()[0]

    def encode_image(self, image: np.ndarray | Image.Image, encoder: str) -> tuple[int, ...]:
        """Grid coordinates of an image, by ``encoder``: ``"oracle"`` (each slot's most likely
        value) or ``"clip"`` (CLIP zero-shot: the state whose prompt is most similar)."""
        image = as_uint8_image(image)
        g = self.grammar
        if encoder == "oracle":
            blind = [s.name for s in g.slots if s.attribute is None]
            if blind:
                raise ValueError(
                    f"The oracle cannot encode slots {blind} (no world attribute); use target_encoder='clip' or give coordinates."
                )
            probs = self.oracle().probabilities(_as_64(image)[None])
            coords = []
            for a, slot in enumerate(g.slots):
                # The slot's most likely value among its own values (the oracle knows more classes).
                p = probs[slot.attribute][0].cpu().numpy()[self.state_classes[a]]
                coords.append(int(np.argmax(p)))
            return tuple(coords)
        clip = self.clip()
        with torch.no_grad():
            img = clip.encode_images(image[None])[0]
            if g.n_states <= 50_000:  # zero-shot over every state's prompt
                best, best_score = 0, -np.inf
                for start in range(0, g.n_states, 1024):
                    idx = range(start, min(start + 1024, g.n_states))
                    txt = clip.encode_texts([g.render(g.unindex(i)) for i in idx])
                    scores = txt @ img
                    k = int(scores.argmax())
                    if float(scores[k]) > best_score:
                        best, best_score = idx[k], float(scores[k])
                return g.unindex(best)
            # Larger grids: coordinate ascent, one slot at a time, from the grid's centre.
            coords = [int(n - 1) // 2 for n in g.shape]
            for _ in range(3):
                for a in range(self.n_axes):
                    options = [(*coords[:a], v, *coords[a + 1 :]) for v in range(g.shape[a])]
                    scores = clip.encode_texts([g.render(c) for c in options]) @ img
                    coords[a] = int(scores.argmax())
            return tuple(coords)

    @property
    def cache_size(self) -> int:
        """Number of images (of any grid sharing this image source and seed) generated so far."""
        return len(self.image_store)


def as_uint8_image(image: Any) -> np.ndarray:
    """A writable uint8 (H, W, 3) RGB copy of a PIL image or an array: uint8 as is, integers in
    0..255, floats in [0, 1] (scaled by 255). Anything else (NaN, 0-255 floats, a 2-D array, an
    alpha channel) is an error that says what was given."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ArgumentTypeError(
            f"A target image must be a uint8 array (H, W, 3), a PIL image or an image file path; "
            f"got {summarise(image)}."
        )
    arr = image
    if arr.ndim != 3 or arr.shape[-1] != 3 or min(arr.shape[:2]) < 1:
        raise ValueError(
            f"A target image must be H×W×3 RGB, got {summarise(arr)}; convert it to RGB (coordinates "
            "are a 1-D sequence of ints)."
        )
    if arr.dtype == np.uint8:
        return np.array(arr)  # a writable copy: torch warns on read-only arrays from PIL
    if arr.dtype.kind in "iu":
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"An integer target image must be in 0..255, got {summarise(arr)}.")
        return arr.astype(np.uint8)
    if arr.dtype.kind != "f":
        raise ArgumentTypeError(
            f"A target image must be uint8 or float in [0, 1], got {summarise(arr)}."
        )
    check_finite("The target image", arr)
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"A float target image must be in [0, 1], got {summarise(arr)}; pass 0-255 values "
            "as uint8."
        )
    return (arr * 255.0).round().astype(np.uint8)


def read_target_image(path: Any) -> np.ndarray:
    """An image file as uint8 (H, W, 3); a corrupt or non-image file is a ValueError."""
    try:
        with Image.open(path) as im:
            return as_uint8_image(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(
            f"Cannot read target image {path} ({type(err).__name__}: {err}); give a PNG or JPEG "
            "file, or coordinates or a prompt."
        ) from err


def _as_64(image: np.ndarray) -> np.ndarray:
    """The oracle reads 64×64 images; resize anything else (e.g. a real SD pipeline's 512 px)."""
    if image.shape[:2] == (64, 64):
        return image
    return np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.BICUBIC))
