"""``GrammarGrid-v0``: image search on a grid of grammar prompts (Marathe, "RLDF").

A context-free grammar (:mod:`diffenvs.grammar`) spans an n-dimensional grid: one axis per slot,
whose values are semantically ordered. Every grid state is a prompt; its image is generated once
with a fixed seed and cached. The agent walks the grid one step at a time towards the encoding of a
target image and is rewarded by what a detector (the world's attribute oracle) or CLIP sees in the
image of the state it reaches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from PIL import Image

from diffenvs import errors
from diffenvs.envs.checks import discrete_action
from diffenvs.envs.grammar_grid_perception import (
    CACHE_KIND,
    GridPerception,
    as_uint8_image,
    read_target_image,
    scene_of_state,
)
from diffenvs.grammar import Grammar, load_grammar

__all__ = ["CACHE_KIND", "REWARDS", "GrammarGridEnv", "scene_of_state"]

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


class GrammarGridEnv(gym.Env):
    """Walk a grid of grammar prompts to the state whose image matches a target (RLDF).

    **Grid.** Each slot of ``grammar`` is one axis; coordinate ``i`` on an axis is the slot's
    ``i``-th value, and values are ordered so that neighbours look alike. The default grammar is
    count (3) × shape (6) × colour (8) × scene (6) = 864 states over the embedded world, rendering
    prompts such as ``"two large green triangles in the middle of an ocean"``;
    ``grammar="default_9x"`` adds position and pattern axes (7,776 states, Marathe's 9× scale).

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
    same ``generation_seed`` (Marathe: dynamic seeds give inconsistent rewards) and its image,
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
            "the reward functions of Marathe: 'multi_semantic' (1, eq. 2-4), 'partial_semantic' (2, eq. 5), 'clip' (3, eq. 6)",
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
        self.fine_weight = errors.check_number("fine_weight", fine_weight, -1e6, 1e6)
        self.scene_weight = errors.check_number("scene_weight", scene_weight, -1e6, 1e6)
        self.relative_reward = errors.check_bool("relative_reward", relative_reward)
        self.goal_reward = errors.check_number("goal_reward", goal_reward, -1e6, 1e6)
        self.generation_seed = errors.check_seed(
            "generation_seed", generation_seed, allow_none=False
        )
        errors.check_int("num_inference_steps", num_inference_steps, 1, 1000)
        errors.check_number("guidance_scale", guidance_scale, 0.0, 1000.0)
        precompute = errors.check_bool("precompute", precompute)
        self.clip_name = errors.check_str("clip", clip)

        g = self.grammar
        self.shape = np.array(g.shape, dtype=np.int64)
        # C-order strides, for a fast flat state index in step().
        self._strides = np.array([int(np.prod(g.shape[i + 1 :])) for i in range(len(g.shape))])
        self.n_axes = len(g.shape)
        self.scene_axis = self._find_scene_axis(scene_slot)
        self.fine_axes = [i for i in range(self.n_axes) if i != self.scene_axis]
        self._check_reward_is_computable()

        # Images, detector readings and CLIP embeddings of the states, cached per process.
        self.perception = GridPerception(
            g,
            model=model,
            generation_seed=self.generation_seed,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            clip=clip,
            use_clip=self.reward_name == "clip",
            detector=self.detector,
        )
        self.model_name = self.perception.model_name
        if self.detector == "oracle" and self.reward_name != "clip":
            _ = self.perception.state_classes  # fail now, not mid-episode, on a non-world value

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
        self._terminated = False

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

    # ------------------------------------------------------------------ images
    def prompt(self, coords: Sequence[int]) -> str:
        """The prompt of grid state ``coords``."""
        return self.grammar.render(coords)

    def state_image(self, coords: Sequence[int]) -> np.ndarray:
        """The (cached, read-only) image of grid state ``coords``, uint8 (H, W, 3)."""
        return self.perception.state_image(self.grammar.index(coords))

    def precompute(self, batch_size: int = 256) -> None:
        """Generate and score every state now (in batches) instead of on first visit."""
        self.perception.precompute(batch_size)

    @property
    def position(self) -> tuple[int, ...]:
        """The current state's grid coordinates."""
        return self._pos

    # ------------------------------------------------------------------ target
    def _set_target(self, target: Any) -> None:
        g = self.grammar
        self.target_image: np.ndarray | None = None
        if target is None:
            coords = tuple(int(n - 1) // 2 for n in g.shape)
        elif isinstance(target, Image.Image) or (
            isinstance(target, np.ndarray) and target.ndim >= 2
        ):
            # Any array of 2+ dims is an image (1-D ones are coordinates): a wrong shape is an
            # error about the image, never read as coordinates.
            self.target_image = as_uint8_image(target)
            coords = self.encode_image(self.target_image)
        elif isinstance(target, str | Path) and str(target).lower().endswith(_IMAGE_SUFFIXES):
            path = Path(target).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"Target image {path} does not exist; pass an existing image file, coordinates or a prompt."
                )
            self.target_image = read_target_image(path)
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
            self._target_embed = self.perception.embed_image(image)
        self._reward_max = self._max_reward()
        # Per state: (reward, fine matches, scene match, distance); valid for this target only.
        self._landing: dict[int, tuple[float, int | None, bool | None, int]] = {}

    def encode_image(self, image: np.ndarray | Image.Image) -> tuple[int, ...]:
        """Grid coordinates of an image, by ``target_encoder`` (oracle or CLIP zero-shot)."""
        return self.perception.encode_image(image, self.target_encoder)

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
        self.perception.perceive([idx])
        return self.perception.readings[idx] == np.asarray(self.target)

    def semantic_reward(self, coords: Sequence[int]) -> float:
        """The paper's reward (eq. 2-6) of landing in ``coords``, before shifting and goal bonus."""
        idx = self.grammar.index(coords)
        if self.reward_name == "clip":
            self.perception.perceive([idx])
            return float(np.dot(self.perception.embedding(idx), self._target_embed))
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
            "prompt": self.perception.prompt(idx),
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
        errors.check_seed("seed", seed)
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
        self._terminated = False
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not self._reset_done:
            raise RuntimeError("Call reset() before step(); the episode has not started.")
        if self._terminated:
            raise RuntimeError(
                "The episode is over (the target was reached, terminated=True); call reset()."
            )
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
        self._terminated = terminated
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
        return self.perception.cache_size


def _check_choice(
    name: str, value: str, allowed: Sequence[str] | dict[str, str], meaning: str
) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"Unknown {name} {errors.summarise(value)}; use one of {list(allowed)} ({meaning})."
        )
    return value
