"""``GrammarGrid-v0``: image search on a grid of grammar prompts (RLDF, seed 003).

A context-free grammar (:mod:`diffenvs.grammar`) spans an n-dimensional grid: one axis per slot,
whose values are semantically ordered. Every grid state is a prompt; its image is generated once
with a fixed seed and cached. The agent walks the grid one step at a time towards the encoding of a
target image and is rewarded by what a detector (the world's attribute oracle) or CLIP sees in the
image of the state it reaches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from PIL import Image

from diffenvs.envs.checks import discrete_action
from diffenvs.grammar import Grammar, load_grammar
from diffenvs.world.attributes import ATTRIBUTE_CLASSES, MODIFIER_CATEGORIES, MODIFIER_CATEGORY
from diffenvs.world.render import Scene, parse_prompt, render

__all__ = ["REWARDS", "GrammarGridEnv", "clear_caches", "scene_of_state"]

# Canonical reward names, with the aliases the paper uses (Reward 1, 2, 3 in Table 3).
REWARDS: dict[str, str] = {
    "multi_semantic": "multi_semantic",
    "partial_semantic": "partial_semantic",
    "clip": "clip",
    "1": "multi_semantic",
    "2": "partial_semantic",
    "3": "clip",
}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

# Models are shared by every env instance in the process: tests and benchmarks build many envs and
# reloading a CLIP or a pipeline per env would dominate their run time.
_SHARED: dict[tuple[Any, ...], Any] = {}


def _shared(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    if key not in _SHARED:
        _SHARED[key] = build()
    return _SHARED[key]


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


class GrammarGridEnv(gym.Env):
    """Walk a grid of grammar prompts to the state whose image matches a target (RLDF).

    **Grid.** Each slot of ``grammar`` is one axis; coordinate ``i`` on an axis is the slot's
    ``i``-th value, and values are ordered so that neighbours look alike. The default grammar is
    count (3) × shape (6) × colour (8) × scene (6) = 864 states over the embedded world, rendering
    prompts such as ``"two large green triangles in the middle of an ocean"``;
    ``grammar="default_9x"`` adds position and pattern axes (7,776 states, seed 003's 9× scale).

    **Observation.** ``observation="coords"`` (default): ``MultiDiscrete(grid shape)``, the state's
    coordinates. ``"coords_target"``: the coordinates followed by the target's coordinates
    (``MultiDiscrete(shape + shape)``), for goal-conditioned agents. ``"image"``: a ``Dict`` with
    ``"coords"`` and ``"image"`` (the state's generated image, uint8 H×W×3).

    **Actions.** ``Discrete(2 * n_axes)``: action ``2k`` steps +1 along axis ``k``, action
    ``2k + 1`` steps −1. Boundary rule ``boundary="clip"`` (default, as in the classic GridWorld):
    a step off the edge leaves the agent where it is (the step still costs its reward).
    ``boundary="wrap"`` wraps around instead (this joins the two ends of an axis, which breaks
    semantic locality there).

    **Target.** ``target`` may be grid coordinates, a prompt the grammar can parse, an image
    (uint8 array H×W×3, PIL image, or image file path) or ``None`` (the grid's centre). An image is
    encoded to coordinates by ``target_encoder``: ``"oracle"`` (the world's attribute oracle, each
    slot's most likely value) or ``"clip"`` (CLIP zero-shot: the state whose prompt is most similar
    to the image). ``reset(options={"target": ...})`` changes the target.

    **Reward** (``reward=``), computed on the image of the state the step lands in, where ``g`` is
    what the detector reads off that image and ``GT`` the target's values:

    * ``"multi_semantic"`` (``1``, eq. 2-4): ``C · (share of object slots whose value matches) +
      (C_s if the scene matches else −C_s)``. Object ("fine") slots are every slot except the scene
      slot ("coarse"); ``C = fine_weight``, ``C_s = scene_weight``.
    * ``"partial_semantic"`` (``2``, eq. 5): ``+C_s`` if the scene matches else ``−C_s``.
    * ``"clip"`` (``3``, eq. 6): cosine similarity of the CLIP image embeddings of the state's image
      and the target image.

    ``detector="oracle"`` reads ``g`` with the world's attribute oracle; ``detector="exact"`` reads
    it from the state's own prompt (a perfect detector; needs no weights, and works for slots that
    are not world attributes). With ``relative_reward=True`` (default) the reward's maximum is
    subtracted so every step that has not reached the goal costs something: with the paper's raw
    values a discounted agent that has found the right scene (+C_s per step) would rather stay
    there forever than end the episode. ``goal_reward`` is added on the step that reaches the
    target. ``relative_reward=False, goal_reward=0`` gives the paper's raw values.

    **Episode.** Starts in a uniformly random state other than the target (``reset`` option
    ``"start"`` fixes it). Terminates on reaching the target's coordinates; registered with
    ``max_episode_steps=100`` (truncation).

    **Images.** ``model="world"`` (default) generates with the embedded text-to-image pipeline
    (:class:`diffenvs.generate.ImageGenerator`; any folder or hub id ``load_pipeline`` accepts works
    too, or pass an ``ImageGenerator``); ``model="renderer"`` draws the prompt's scene with the
    world's procedural renderer (a perfect, fast generator for development). Every state uses the
    same ``generation_seed`` (seed 003: dynamic seeds give inconsistent rewards) and its image,
    detector reading and CLIP embedding are cached, so each state is generated at most once per
    process. ``precompute=True`` generates every state up front in batches.

    Args:
        grammar: a :class:`~diffenvs.grammar.Grammar`, preset name, grammar text, dict or file.
        target: see **Target**.
        reward: ``"multi_semantic"``/``1``, ``"partial_semantic"``/``2`` or ``"clip"``/``3``.
        model: ``"world"``, ``"renderer"``, a pipeline folder/hub id, or an ``ImageGenerator``.
        detector: ``"oracle"`` or ``"exact"`` (semantic rewards only).
        target_encoder: ``"oracle"`` or ``"clip"`` (image targets only).
        clip: CLIP name for the CLIP reward and encoder (see :func:`diffenvs.models.load_clip`).
        observation: ``"coords"``, ``"coords_target"`` or ``"image"``.
        boundary: ``"clip"`` or ``"wrap"``.
        fine_weight: ``C`` of eq. 3. scene_weight: ``C_s`` of eq. 4/5.
        relative_reward: subtract the reward's maximum (see **Reward**).
        goal_reward: bonus on reaching the target.
        generation_seed: the fixed seed every state's image is generated with.
        num_inference_steps, guidance_scale: sampling settings of the text-to-image pipeline.
        scene_slot: the slot whose match is the coarse "scene" term; default: the slot tied to the
            world's ``scene`` attribute (or named ``Scene``).
        precompute: generate and score every state at construction, in batches.
        render_mode: ``"rgb_array"`` (the state's image next to the target image) or ``None``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        grammar: Grammar | str | dict = "default",
        target: Sequence[int] | str | np.ndarray | Image.Image | None = None,
        reward: str | int = "multi_semantic",
        model: Any = "world",
        detector: str = "oracle",
        target_encoder: str = "oracle",
        clip: str = "world",
        observation: str = "coords",
        boundary: str = "clip",
        fine_weight: float = 1.0,
        scene_weight: float = 1.0,
        relative_reward: bool = True,
        goal_reward: float = 1.0,
        generation_seed: int = 0,
        num_inference_steps: int = 20,
        guidance_scale: float = 4.0,
        scene_slot: str | None = None,
        precompute: bool = False,
        render_mode: str | None = None,
    ) -> None:
        self.grammar = load_grammar(grammar)
        self.reward_name = _check_choice(
            "reward",
            str(reward),
            REWARDS,
            "the reward functions of seed 003: 'multi_semantic' (1, eq. 2-4), 'partial_semantic' (2, eq. 5), 'clip' (3, eq. 6)",
        )
        self.reward_name = REWARDS[self.reward_name]
        self.detector = _check_choice(
            "detector",
            detector,
            ("oracle", "exact"),
            "'oracle' reads images with the world's attribute oracle, 'exact' reads the state's prompt",
        )
        self.target_encoder = _check_choice(
            "target_encoder",
            target_encoder,
            ("oracle", "clip"),
            "how an image target becomes grid coordinates",
        )
        self.observation_mode = _check_choice(
            "observation",
            observation,
            ("coords", "coords_target", "image"),
            "what the agent observes",
        )
        self.boundary = _check_choice(
            "boundary", boundary, ("clip", "wrap"), "what a step off the edge of an axis does"
        )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(
                f"render_mode={render_mode!r} is not supported; use 'rgb_array' or None."
            )
        self.render_mode = render_mode
        self.fine_weight = float(fine_weight)
        self.scene_weight = float(scene_weight)
        self.relative_reward = bool(relative_reward)
        self.goal_reward = float(goal_reward)
        self.generation_seed = int(generation_seed)
        self.clip_name = clip

        g = self.grammar
        self.shape = np.array(g.shape, dtype=np.int64)
        # C-order strides, for a fast flat state index in step().
        self._strides = np.array([int(np.prod(g.shape[i + 1 :])) for i in range(len(g.shape))])
        self.n_axes = len(g.shape)
        self.scene_axis = self._find_scene_axis(scene_slot)
        self.fine_axes = [i for i in range(self.n_axes) if i != self.scene_axis]
        self._check_reward_is_computable()

        # The image source: the procedural renderer, or a text-to-image pipeline with a cache.
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

        # Caches keyed by prompt and shared by every env with the same image source and seed, so a
        # state is generated, read by the oracle and embedded by CLIP once per process.
        key = (*model_key, self.generation_seed)
        self._image_store: dict[str, np.ndarray] = _shared(("images", *key), dict)
        self._oracle_store: dict[str, dict[str, int]] = _shared(("oracle", *key), dict)
        self._embed_store: dict[str, np.ndarray] = _shared(("clip", str(clip), *key), dict)
        # Per env: flat state index → prompt, and → detector reading (coordinate per slot, -1 when
        # the detector sees a value that is not on the slot's axis).
        self._prompts: dict[int, str] = {}
        self._readings: dict[int, np.ndarray] = {}
        self._world_classes: list[np.ndarray] | None = None
        if self.detector == "oracle" and self.reward_name != "clip":
            _ = self._state_classes  # fail now, not mid-episode, if a value is not a world class

        self.action_space = spaces.Discrete(2 * self.n_axes)
        coords_space = spaces.MultiDiscrete(self.shape)
        if self.observation_mode == "coords":
            self.observation_space: spaces.Space = coords_space
        elif self.observation_mode == "coords_target":
            self.observation_space = spaces.MultiDiscrete(np.concatenate([self.shape, self.shape]))
        else:
            h, w, _ = self.state_image(tuple(0 for _ in g.shape)).shape
            self.observation_space = spaces.Dict(
                {"coords": coords_space, "image": spaces.Box(0, 255, (h, w, 3), np.uint8)}
            )

        if precompute:
            self.precompute()
        self._set_target(target)
        self._pos: tuple[int, ...] = self.target  # replaced on reset
        self._reset_done = False

    # ------------------------------------------------------------------ set-up helpers
    def _find_scene_axis(self, scene_slot: str | None) -> int | None:
        names = list(self.grammar.axes)
        if scene_slot is not None:
            if scene_slot not in names:
                raise ValueError(f"scene_slot={scene_slot!r} is not a slot; use one of {names}.")
            return names.index(scene_slot)
        for i, s in enumerate(self.grammar.slots):
            if s.attribute == "scene":
                return i
        lowered = [n.lower() for n in names]
        return lowered.index("scene") if "scene" in lowered else None

    def _check_reward_is_computable(self) -> None:
        if self.reward_name == "partial_semantic" and self.scene_axis is None:
            raise ValueError(
                "reward='partial_semantic' (eq. 5) rewards scene matches only, but the grammar has "
                "no scene slot. Add a slot with attribute='scene', pass scene_slot=..., or use "
                "reward='multi_semantic' or 'clip'."
            )
        if self.reward_name != "clip" and self.detector == "oracle":
            blind = [s.name for s in self.grammar.slots if s.attribute is None]
            if blind:
                raise ValueError(
                    f"detector='oracle' cannot read slots {blind}: they are not tied to a world "
                    "attribute. Set Slot(attribute=...), use detector='exact', or reward='clip'."
                )

    @property
    def _state_classes(self) -> list[np.ndarray]:
        """Per slot, the oracle class index of each value (only needed when the oracle is used)."""
        if self._world_classes is None:
            self._world_classes = [
                np.array([s.world_class(v) if s.attribute else -1 for v in s.values])
                for s in self.grammar.slots
            ]
        return self._world_classes

    def _oracle(self) -> Any:
        from diffenvs.models import load_oracle

        return _shared(("oracle",), lambda: load_oracle())

    def _clip(self) -> Any:
        from diffenvs.models import load_clip

        return _shared(("clip", str(self.clip_name)), lambda: load_clip(self.clip_name))

    # ------------------------------------------------------------------ images and perception
    def prompt(self, coords: Sequence[int]) -> str:
        """The prompt of grid state ``coords``."""
        return self.grammar.render(coords)

    def _prompt(self, idx: int) -> str:
        if idx not in self._prompts:
            self._prompts[idx] = self.grammar.render(self.grammar.unindex(idx))
        return self._prompts[idx]

    def state_image(self, coords: Sequence[int]) -> np.ndarray:
        """The (cached, read-only) image of grid state ``coords``, uint8 (H, W, 3)."""
        idx = self.grammar.index(coords)
        self._generate([idx])
        return self._image_store[self._prompt(idx)]

    def _generate(self, indices: list[int]) -> None:
        """Generate the images of states (by flat index) that no env has generated yet."""
        todo = {self._prompt(i): i for i in indices if self._prompt(i) not in self._image_store}
        if not todo:
            return
        if self._generator is None:
            imgs = [
                np.asarray(
                    render(
                        scene_of_state(self.grammar, self.grammar.unindex(i)), self.generation_seed
                    )
                )
                for i in todo.values()
            ]
        else:
            imgs = list(self._generator.images(list(todo), [self.generation_seed] * len(todo)))
        for p, img in zip(todo, imgs, strict=True):
            img = np.array(img, dtype=np.uint8)
            img.setflags(write=False)  # cached and shared: callers must not change it in place
            self._image_store[p] = img

    def _perceive(self, indices: list[int]) -> None:
        """Fill the detector readings or CLIP embeddings of states, in one batch."""
        if self.reward_name == "clip":
            todo_idx = {
                self._prompt(i): i for i in indices if self._prompt(i) not in self._embed_store
            }
            todo = list(todo_idx)
            if todo:
                self._generate(list(todo_idx.values()))
                with torch.no_grad():
                    emb = self._clip().encode_images(np.stack([self._image_store[p] for p in todo]))
                for p, e in zip(todo, emb.cpu().numpy(), strict=True):
                    self._embed_store[p] = e
            return
        todo = [i for i in dict.fromkeys(indices) if i not in self._readings]
        if not todo:
            return
        if self.detector == "exact":
            for i in todo:  # the state's own values: its coordinates are its reading
                self._readings[i] = np.array(self.grammar.unindex(i), dtype=np.int64)
            return
        prompts = [self._prompt(i) for i in todo]
        unread_idx = {
            p: i for p, i in zip(prompts, todo, strict=True) if p not in self._oracle_store
        }
        unread = list(unread_idx)
        if unread:
            self._generate(list(unread_idx.values()))
            pred = self._oracle().predict(np.stack([_as_64(self._image_store[p]) for p in unread]))
            for k, p in enumerate(unread):
                self._oracle_store[p] = {a: int(v[k]) for a, v in pred.items()}
        for i, p in zip(todo, prompts, strict=True):
            seen = self._oracle_store[p]
            reading = np.full(self.n_axes, -1, dtype=np.int64)
            for a, slot in enumerate(self.grammar.slots):
                # Map the oracle's class back to this slot's coordinate; -1 if it is not a value.
                hits = np.flatnonzero(self._state_classes[a] == seen[slot.attribute])
                reading[a] = hits[0] if len(hits) else -1
            self._readings[i] = reading

    def precompute(self, batch_size: int = 256) -> None:
        """Generate and score every state now (in batches) instead of on first visit."""
        all_idx = list(range(self.grammar.n_states))
        for start in range(0, len(all_idx), batch_size):
            chunk = all_idx[start : start + batch_size]
            self._generate(chunk)
            self._perceive(chunk)

    # ------------------------------------------------------------------ target
    def _set_target(self, target: Any) -> None:
        g = self.grammar
        self.target_image: np.ndarray | None = None
        if target is None:
            coords = tuple(int(n - 1) // 2 for n in g.shape)
        elif isinstance(target, Image.Image | np.ndarray) and np.asarray(target).ndim == 3:
            self.target_image = _as_uint8_image(target)
            coords = self.encode_image(self.target_image)
        elif isinstance(target, str | Path) and str(target).lower().endswith(_IMAGE_SUFFIXES):
            path = Path(target).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"Target image {path} does not exist; pass an existing image file, coordinates or a prompt."
                )
            self.target_image = _as_uint8_image(Image.open(path))
            coords = self.encode_image(self.target_image)
        elif isinstance(target, str):
            try:
                coords = g.parse(target)
            except ValueError as err:
                raise ValueError(
                    f"Cannot use target prompt {target!r}: {err} Or pass grid coordinates."
                ) from err
        else:
            coords = g.check_coords(target, what="target")
        self.target = g.check_coords(coords, what="target")
        self._target_index = g.index(self.target)
        # Rewards depend on the target; reward-only caches are rebuilt lazily against it.
        self._target_embed: np.ndarray | None = None
        if self.reward_name == "clip":
            image = (
                self.target_image
                if self.target_image is not None
                else self.state_image(self.target)
            )
            with torch.no_grad():
                self._target_embed = (
                    self._clip().encode_images(np.array(image[None])).cpu().numpy()[0]
                )
        self._reward_max = self._max_reward()
        # Per state: (reward, fine matches, scene match, distance); valid for this target only.
        self._landing: dict[int, tuple[float, int | None, bool | None, int]] = {}

    def encode_image(self, image: np.ndarray | Image.Image) -> tuple[int, ...]:
        """Grid coordinates of an image, by ``target_encoder`` (oracle or CLIP zero-shot)."""
        image = _as_uint8_image(image)
        g = self.grammar
        if self.target_encoder == "oracle":
            blind = [s.name for s in g.slots if s.attribute is None]
            if blind:
                raise ValueError(
                    f"The oracle cannot encode slots {blind} (no world attribute); use target_encoder='clip' or give coordinates."
                )
            probs = self._oracle().probabilities(_as_64(image)[None])
            coords = []
            for a, slot in enumerate(g.slots):
                # The slot's most likely value among its own values (the oracle knows more classes).
                p = probs[slot.attribute][0].cpu().numpy()[self._state_classes[a]]
                coords.append(int(np.argmax(p)))
            return tuple(coords)
        clip = self._clip()
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

    # ------------------------------------------------------------------ rewards
    def _max_reward(self) -> float:
        if self.reward_name == "clip":
            return 1.0
        fine = self.fine_weight if self.fine_axes else 0.0
        scene = self.scene_weight if self.scene_axis is not None else 0.0
        return scene if self.reward_name == "partial_semantic" else fine + scene

    def matches(self, coords: Sequence[int]) -> np.ndarray:
        """Per slot, whether the detector reads the target's value off the state's image."""
        idx = self.grammar.index(coords)
        self._perceive([idx])
        return self._readings[idx] == np.asarray(self.target)

    def semantic_reward(self, coords: Sequence[int]) -> float:
        """The paper's reward (eq. 2-6) of landing in ``coords``, before shifting and goal bonus."""
        idx = self.grammar.index(coords)
        if self.reward_name == "clip":
            self._perceive([idx])
            return float(np.dot(self._embed_store[self._prompt(idx)], self._target_embed))
        m = self.matches(coords)
        scene = 0.0
        if self.scene_axis is not None:
            scene = self.scene_weight if m[self.scene_axis] else -self.scene_weight
        if self.reward_name == "partial_semantic":
            return scene
        fine = self.fine_weight * float(m[self.fine_axes].mean()) if self.fine_axes else 0.0
        return fine + scene

    def reward_of(self, coords: Sequence[int]) -> float:
        """The reward of a step that lands in ``coords`` (shifted, plus the goal bonus)."""
        r = self.semantic_reward(coords)
        if self.relative_reward:
            r -= self._reward_max
        if tuple(coords) == self.target:
            r += self.goal_reward
        return float(r)

    def distance(self, coords: Sequence[int] | None = None) -> int:
        """Fewest steps from ``coords`` (default: the current state) to the target."""
        c = np.asarray(self._pos if coords is None else coords)
        d = np.abs(c - np.asarray(self.target))
        if self.boundary == "wrap":
            d = np.minimum(d, self.shape - d)
        return int(d.sum())

    # ------------------------------------------------------------------ Gymnasium API
    def _obs(self) -> Any:
        coords = np.array(self._pos, dtype=np.int64)
        if self.observation_mode == "coords":
            return coords
        if self.observation_mode == "coords_target":
            return np.concatenate([coords, np.array(self.target, dtype=np.int64)])
        return {"coords": coords, "image": self.state_image(self._pos).copy()}

    def _landing_of(self, idx: int) -> tuple[float, int | None, bool | None, int]:
        """Cached (reward, fine matches, scene match, distance) of landing in state ``idx``."""
        if idx not in self._landing:
            coords = self.grammar.unindex(idx)
            fine: int | None = None
            scene: bool | None = None
            if self.reward_name != "clip":
                m = self.matches(coords)
                fine = int(m[self.fine_axes].sum())
                scene = bool(m[self.scene_axis]) if self.scene_axis is not None else None
            self._landing[idx] = (self.reward_of(coords), fine, scene, self.distance(coords))
        return self._landing[idx]

    def _info(self) -> dict[str, Any]:
        idx = int(np.dot(self._pos, self._strides))
        _, fine, scene, dist = self._landing_of(idx)
        info: dict[str, Any] = {
            "prompt": self._prompt(idx),
            "coords": self._pos,
            "target": self.target,
            "distance": dist,
            "is_success": self._pos == self.target,
        }
        if self.reward_name != "clip":
            info["fine_matches"] = fine
            info["scene_match"] = scene
        return info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"start", "target"})
        if unknown:
            raise ValueError(
                f"Unknown reset options {unknown}; GrammarGrid-v0 accepts 'start' and 'target'."
            )
        if "target" in options:
            self._set_target(options["target"])
        if "start" in options:
            self._pos = self.grammar.check_coords(options["start"], what="start")
        else:
            # Uniform over the states that are not the target (a start at the goal teaches nothing).
            n = self.grammar.n_states
            k = int(self.np_random.integers(n - 1)) if n > 1 else 0
            k = k + 1 if n > 1 and k >= self._target_index else k
            self._pos = self.grammar.unindex(k)
        self._reset_done = True
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not self._reset_done:
            raise RuntimeError("Call reset() before step(); the episode has not started.")
        a = discrete_action(
            action,
            self.action_space.n,
            "2k: +1 on axis k, 2k+1: -1",
            f"; the grid has {self.action_space.n // 2} axes, 2 actions each",
        )
        axis, delta = divmod(a, 2)
        delta = 1 if delta == 0 else -1
        pos = list(self._pos)
        moved = pos[axis] + delta
        if self.boundary == "wrap":
            moved %= int(self.shape[axis])
        pos[axis] = min(max(moved, 0), int(self.shape[axis]) - 1)
        self._pos = tuple(pos)
        reward = self._landing_of(int(np.dot(self._pos, self._strides)))[0]
        terminated = self._pos == self.target
        return self._obs(), reward, terminated, False, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array'.")
            return None
        current = self.state_image(self._pos)
        target = (
            self.target_image if self.target_image is not None else self.state_image(self.target)
        )
        if target.shape != current.shape:
            target = np.asarray(
                Image.fromarray(target).resize(current.shape[1::-1], Image.Resampling.BICUBIC)
            )
        gap = np.full((current.shape[0], 2, 3), 255, np.uint8)
        return np.concatenate([current, gap, target], axis=1)

    @property
    def cache_size(self) -> int:
        """Number of images (of any grid sharing this image source and seed) generated so far."""
        return len(self._image_store)


def clear_caches() -> None:
    """Drop every shared model and per-prompt cache (images, oracle readings, CLIP embeddings)."""
    _SHARED.clear()


def _check_choice(
    name: str, value: str, allowed: Sequence[str] | dict[str, str], meaning: str
) -> str:
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; use one of {list(allowed)} ({meaning}).")
    return value


def _as_uint8_image(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(
            f"A target image must be H×W×3 RGB, got shape {arr.shape}; convert it to RGB."
        )
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).round().astype(np.uint8)
    return np.array(arr)  # a writable copy: torch warns on read-only arrays from PIL


def _as_64(image: np.ndarray) -> np.ndarray:
    """The oracle reads 64×64 images; resize anything else (e.g. a real SD pipeline's 512 px)."""
    if image.shape[:2] == (64, 64):
        return image
    return np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.BICUBIC))
