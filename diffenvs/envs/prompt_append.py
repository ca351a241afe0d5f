"""``PromptAppend-v0``: append words to a seed prompt until its images match a target (Gudibande & Zhu; Naik et al.).

RLPrompt for text-to-image models: a task is a seed prompt, a target image and optionally the
ground-truth prompt; the agent appends ``n_appends`` words from a vocabulary and is rewarded by how
close the images of the resulting prompt are to the target (Gudibande & Zhu, eq. 4-6). Task sets live in
:mod:`diffenvs.envs.prompt_tasks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from PIL import Image

from diffenvs.envs.checks import discrete_action
from diffenvs.envs.prompt_tasks import (
    DEFAULT_VOCABULARY,
    EXTENDED_VOCABULARY,
    PromptTask,
    caption_vocabulary,
    load_prompt_tasks,
)
from diffenvs.envs.validate import check_append_arguments, check_task_index
from diffenvs.errors import check_seed
from diffenvs.generate import CacheStats
from diffenvs.models.cache import MODEL_CACHE, shared_clip
from diffenvs.world.render import render, scene_from_prompt

__all__ = ["CACHE_KIND", "PromptAppendEnv", "RenderedImages"]

#: This env's namespace in :data:`~diffenvs.models.cache.MODEL_CACHE`: its image generators and
#: per-prompt stores (images, CLIP embeddings, rewards), shared by every env in the process
#: (benchmarks and tests build many). ``diffenvs.models.clear_caches(CACHE_KIND)`` drops them.
CACHE_KIND = "prompt_append"
_T = TypeVar("_T")


def _shared(key: tuple[Any, ...], build: Callable[[], _T]) -> _T:
    return MODEL_CACHE.get((CACHE_KIND, *key), build)


class RenderedImages:
    """The world's procedural renderer behind :class:`~diffenvs.generate.ImageGenerator`'s
    interface: a perfect, fast text-to-image "model" for development and tests. Within a
    category a later modifier wins (a scene holds at most one per category)."""

    def __init__(self) -> None:
        self.stats = CacheStats()

    def images(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        out = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            out.append(np.asarray(render(scene_from_prompt(prompt), int(seed))))
        self.stats.misses += len(out)
        return np.stack(out)


class PromptAppendEnv(gym.Env):
    """Append words to a seed prompt so that its images look like a target image (RLPrompt).

    **Task.** ``tasks`` is a task set: ``"world:train"`` (default), ``"world:test"``, ``"world:all"``
    (Gudibande & Zhu's recipe on world captions, see :func:`~diffenvs.envs.prompt_tasks.world_tasks`), a
    JSONL file (``{"seed_prompt", "target_image", "ground_truth"?}`` a line) or a list of
    :class:`~diffenvs.envs.prompt_tasks.PromptTask`. ``task=i`` fixes task ``i``; otherwise each
    ``reset`` draws one uniformly (``reset(options={"task": i})`` picks one). A task without a
    target image gets one generated from its ground truth with ``target_seed``.

    **Vocabulary.** ``vocabulary="default"``: the world's eight style modifiers, "small", "large",
    "photo", "image". ``"extended"``: those plus the world's eight colour and six shape names (26
    words, a prompt space no reward budget covers). ``"captions"``: Naik et al.'s prompt space,
    rebuilt per task: words of the world captions closest to the target in CLIP space, ranked by
    CLIP similarity and cut to ``vocab_size``. Or a list of words/phrases. Word ``i`` is appended as ``separator + word``.

    **Actions.** ``Discrete(V)``: append vocabulary word ``a``. ``action_masks()`` (bool, ``V``) is
    False for words already in the prompt (appended or in the seed prompt): no repeats. A masked
    action raises ``ValueError`` (``masked_action="raise"``), or with ``masked_action="redirect"``
    (for agents that cannot mask, e.g. SB3 PPO/DQN) becomes the next allowed word, reported in
    ``info["redirected_from"]``.

    **Observation.** ``observation="flat"``: ``Box(-1, 1, (V + 1 + k·D (+ V),), float32)``, the
    concatenation of the appended words' multi-hot (``V``), the fraction of appends done (1), the
    CLIP text embedding of the current prompt (``D``), with ``observe_image=True`` the mean CLIP
    image embedding of its images (``D``; costs a generation per step), the CLIP embedding of
    the target image (``D``) and, with ``observe_candidates=True``, the CLIP text-image similarity
    of each next word's prompt to the target (``V``, :meth:`candidate_similarities`; no image is
    generated). ``observation="dict"``: the same parts as ``"tokens"`` (``Box`` multi-hot),
    ``"appended"`` (``MultiDiscrete([V + 1] * n_appends)``, ``V`` = not yet),
    ``"prompt_embedding"``, ``"image_embedding"`` (optional), ``"target_embedding"`` and
    ``"candidate_similarity"`` (optional).

    **Reward** (Gudibande & Zhu, eq. 6) of a prompt ``s``: ``λ_i · R_image + λ_j · R_text`` with
    ``R_image`` (eq. 4) the cosine similarity of the CLIP image embeddings of ``D(s)`` and the target,
    averaged over the fixed ``generation_seeds``, and ``R_text`` (eq. 5) the cosine similarity of
    the CLIP text embeddings of ``s`` and the ground truth (``lambda_text > 0`` needs one).
    ``reward_mode="terminal"`` (Gudibande & Zhu) pays it once, for the final prompt; ``"per_step"``
    (Naik et al.) pays it for the prompt after every append.

    **Episode.** Starts at the seed prompt and terminates after ``n_appends`` appends (never
    truncated). ``info``: ``prompt``, ``appended`` (the appended words as one string), ``task``,
    ``category`` and, on steps that computed a reward, ``image_similarity``, ``text_similarity``,
    ``reward_evaluations`` (prompts scored so far by this env) and ``cache_hit_rate`` (share of
    (prompt, seed) image look-ups served from cache so far; also ``env.cache_stats``).

    **Caching.** Images come from a shared :class:`~diffenvs.generate.ImageGenerator` (cached by
    (prompt, seed)); their CLIP embeddings, the text embeddings and the rewards are cached too, so a
    prompt costs one generation per seed per process. ``model="renderer"`` uses the world's
    procedural renderer instead (exact and fast; for development and tests).

    Args:
        tasks: task set (see **Task**). task: fixed task index or ``None``.
        vocabulary: ``"default"``, ``"extended"``, ``"captions"`` or a list of words.
            vocab_size: size of the ``"captions"`` prompt space.
        n_appends: ``T``, words appended per episode.
        reward_mode: ``"terminal"`` or ``"per_step"``. lambda_image, lambda_text: λ_i, λ_j.
        generation_seeds: the seeds each prompt's images are generated with (reward average).
        target_seed: seed of targets generated from a ground truth.
        model: ``"world"``, ``"renderer"``, a pipeline folder/hub id, or an ``ImageGenerator``.
        clip: CLIP name (see :func:`diffenvs.models.load_clip`).
        num_inference_steps, guidance_scale: sampling settings of the pipeline.
        observation: ``"flat"`` or ``"dict"``. observe_image: include the current image embedding.
            observe_candidates: include each next word's CLIP text-image similarity.
        masked_action: ``"raise"`` or ``"redirect"``. separator: put before each appended word.
        render_mode: ``"rgb_array"`` (current prompt's first image next to the target) or ``None``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self,
        tasks: Any = "world:train",
        task: int | None = None,
        vocabulary: str | Sequence[str] = "default",
        vocab_size: int = 12,
        n_appends: int = 2,
        reward_mode: str = "terminal",
        lambda_image: float = 1.0,
        lambda_text: float = 0.0,
        generation_seeds: Sequence[int] = (0, 1),
        target_seed: int = 1000,
        model: Any = "world",
        clip: str = "world",
        num_inference_steps: int = 20,
        guidance_scale: float = 4.0,
        observation: str = "flat",
        observe_image: bool = False,
        observe_candidates: bool = False,
        masked_action: str = "raise",
        separator: str = ", ",
        render_mode: str | None = None,
    ) -> None:
        self.tasks = load_prompt_tasks(tasks)
        for name, value, allowed in (
            ("reward_mode", reward_mode, ("terminal", "per_step")),
            ("observation", observation, ("flat", "dict")),
            ("masked_action", masked_action, ("raise", "redirect")),
            ("render_mode", render_mode, (None, "rgb_array")),
        ):
            if value not in allowed:
                raise ValueError(f"Unknown {name} {value!r}; use one of {list(allowed)}.")
        self.generation_seeds = check_append_arguments(
            tasks=self.tasks,
            task=task,
            n_appends=n_appends,
            vocab_size=vocab_size,
            lambdas=(lambda_image, lambda_text),
            generation_seeds=generation_seeds,
            target_seed=target_seed,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            separator=separator,
            flags={"observe_image": observe_image, "observe_candidates": observe_candidates},
        )
        self.task_index = None if task is None else int(task)
        self.n_appends = int(n_appends)
        self.reward_mode, self.observation_mode = reward_mode, observation
        self.lambda_image, self.lambda_text = float(lambda_image), float(lambda_text)
        self.target_seed, self.separator = int(target_seed), separator
        self.observe_image, self.masked_action = bool(observe_image), masked_action
        self.observe_candidates = bool(observe_candidates)
        self.render_mode = render_mode
        self.vocab_mode = vocabulary if isinstance(vocabulary, str) else "list"
        if isinstance(vocabulary, str):
            named = {"default": DEFAULT_VOCABULARY, "extended": EXTENDED_VOCABULARY}
            if vocabulary not in (*named, "captions"):
                raise ValueError(
                    f"Unknown vocabulary {vocabulary!r}; use 'default', 'extended', 'captions' or "
                    "a list of words."
                )
            words = list(named.get(vocabulary, [""] * int(vocab_size)))
        else:
            words = _check_vocabulary(vocabulary)
        if not words:
            raise ValueError("The vocabulary is empty; give at least one word (or 'default').")
        self.vocabulary: list[str] = words
        self.V = len(words)

        if isinstance(model, str) and model == "renderer":
            self._generator: Any = _shared(("renderer",), RenderedImages)
            model_key: tuple[Any, ...] = ("renderer",)
        elif hasattr(model, "images"):
            self._generator, model_key = model, ("generator", id(model))
        else:
            from diffenvs.generate import ImageGenerator

            model_key = ("pipeline", str(model), int(num_inference_steps), float(guidance_scale))
            self._generator = _shared(
                model_key,
                lambda: ImageGenerator(
                    str(model),
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                ),
            )
        self.clip = shared_clip(clip)
        key = (*model_key, clip)
        self._img_emb: dict[tuple[str, int], np.ndarray] = _shared(("img_emb", *key), dict)
        self._txt_emb: dict[str, np.ndarray] = _shared(("txt_emb", clip), dict)
        self._targets: dict[tuple[str, int], np.ndarray] = _shared(("targets", *model_key), dict)
        self._rewards: dict[tuple[Any, ...], tuple[float, float]] = _shared(("rewards", *key), dict)
        self.cache_stats = CacheStats()
        self.reward_evaluations = 0
        self.D = int(self._text_embeddings(["a"]).shape[-1])

        T, D, V = self.n_appends, self.D, self.V
        emb = spaces.Box(-1.0, 1.0, (D,), np.float32)
        if observation == "flat":
            width = V + 1 + D * (3 if self.observe_image else 2)
            width += V if self.observe_candidates else 0
            self.observation_space: spaces.Space = spaces.Box(-1.0, 1.0, (width,), np.float32)
        else:
            parts: dict[str, spaces.Space] = {
                "tokens": spaces.Box(0.0, 1.0, (V,), np.float32),
                "appended": spaces.MultiDiscrete([V + 1] * T),
                "prompt_embedding": emb,
                "target_embedding": emb,
            }
            if self.observe_image:
                parts["image_embedding"] = emb
            if self.observe_candidates:
                parts["candidate_similarity"] = spaces.Box(-1.0, 1.0, (V,), np.float32)
            self.observation_space = spaces.Dict(parts)
        self.action_space = spaces.Discrete(V)
        self._task: PromptTask | None = None
        self._tokens: list[int] = []
        self._in_seed = np.zeros(V, bool)

    # ------------------------------------------------------------------ models and caches
    def _text_embeddings(self, prompts: list[str]) -> np.ndarray:
        todo = [p for p in dict.fromkeys(prompts) if p not in self._txt_emb]
        if todo:
            with torch.no_grad():
                emb = self.clip.encode_texts(todo).cpu().numpy()
            self._txt_emb.update(zip(todo, emb, strict=True))
        return np.stack([self._txt_emb[p] for p in prompts])

    def image_embeddings(
        self, prompts: list[str], seeds: Sequence[int] | None = None
    ) -> np.ndarray:
        """CLIP image embeddings (P, S, D) of each prompt's image for each seed, cached."""
        seeds = self.generation_seeds if seeds is None else [int(s) for s in seeds]
        keys = [(p, s) for p in prompts for s in seeds]
        todo = [k for k in dict.fromkeys(keys) if k not in self._img_emb]
        self.cache_stats.misses += len(todo)
        self.cache_stats.hits += len(keys) - len(todo)
        for i in range(0, len(todo), 64):
            chunk = todo[i : i + 64]
            imgs = self._generator.images([p for p, _ in chunk], [s for _, s in chunk])
            with torch.no_grad():
                emb = self.clip.encode_images(np.asarray(imgs)).cpu().numpy()
            self._img_emb.update(zip(chunk, emb, strict=True))
        return np.stack([self._img_emb[k] for k in keys]).reshape(len(prompts), len(seeds), -1)

    def target_image(self, task: PromptTask | None = None) -> np.ndarray:
        """The task's target image (uint8 H×W×3); generated from the ground truth if needed."""
        task = task or self.task
        if task.target_image is not None:
            return task.target_image
        key = (str(task.ground_truth), self.target_seed)
        if key not in self._targets:
            self._targets[key] = np.asarray(self._generator.images([key[0]], [key[1]])[0])
        return self._targets[key]

    def _target_embedding(self, task: PromptTask) -> np.ndarray:
        key = (task.key, self.target_seed)
        store = _shared(("target_emb", id(self._targets), id(self.clip)), dict)
        if key not in store:
            with torch.no_grad():
                store[key] = self.clip.encode_images(self.target_image(task)[None]).cpu().numpy()[0]
        return store[key]

    def candidate_similarities(self, tokens: Sequence[int] | None = None) -> np.ndarray:
        """Float (V,): for each word ``w``, the cosine similarity of the CLIP *text* embedding of
        the prompt with ``w`` appended (after ``tokens``, default: the words appended so far) and
        the target image's CLIP embedding. ImagePrompt's (Naik, Bharadwaj & Bharadwaj) prior over the next word; it generates no
        image and costs no reward evaluation."""
        tokens = list(self._tokens if tokens is None else tokens)
        prompts = [self.prompt_of([*tokens, w]) for w in range(self.V)]
        return self._text_embeddings(prompts) @ self._target_embedding(self.task)

    # ------------------------------------------------------------------ rewards
    def score(
        self, prompts: str | list[str], seeds: Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        """Eq. 4-6 for prompts on the current task, without counting them as reward evaluations:
        ``image_similarity`` (eq. 4, mean over ``seeds``), ``text_similarity`` (eq. 5, NaN
        without a ground truth) and ``reward`` (eq. 6)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        task = self.task
        img = self.image_embeddings(prompts, seeds) @ self._target_embedding(task)
        image_sim = img.mean(axis=1)
        text_sim = np.full(len(prompts), np.nan)
        if task.ground_truth is not None:
            txt = self._text_embeddings([*prompts, task.ground_truth])
            text_sim = txt[:-1] @ txt[-1]
        reward = self.lambda_image * image_sim
        if self.lambda_text:
            reward = reward + self.lambda_text * text_sim
        return {"reward": reward, "image_similarity": image_sim, "text_similarity": text_sim}

    def reward_of(self, prompt: str) -> tuple[float, float, float]:
        """(reward, image similarity, text similarity) of ``prompt``; counts one evaluation."""
        self.reward_evaluations += 1
        key = (self.task.key, self.target_seed, tuple(self.generation_seeds), prompt)
        if key in self._rewards:
            n = len(self.generation_seeds)  # served from cache: count the look-ups as hits
            self.cache_stats.hits += n
        else:
            s = self.score(prompt)
            self._rewards[key] = (float(s["image_similarity"][0]), float(s["text_similarity"][0]))
        image_sim, text_sim = self._rewards[key]
        reward = self.lambda_image * image_sim
        if self.lambda_text:
            reward += self.lambda_text * text_sim
        return float(reward), image_sim, text_sim

    # ------------------------------------------------------------------ episode state
    @property
    def task(self) -> PromptTask:
        if self._task is None:
            raise RuntimeError("Call reset() first; no task has been chosen yet.")
        return self._task

    @property
    def prompt(self) -> str:
        """The current prompt: the seed prompt with the appended words."""
        return self.prompt_of(self._tokens)

    @property
    def tokens(self) -> tuple[int, ...]:
        """The vocabulary indices appended so far this episode (``prompt_of(tokens) == prompt``)."""
        return tuple(self._tokens)

    def prompt_of(self, tokens: Sequence[int]) -> str:
        """The prompt made by appending vocabulary words ``tokens`` to the task's seed prompt."""
        return self.task.seed_prompt + "".join(self.separator + self.vocabulary[t] for t in tokens)

    def action_masks(self) -> np.ndarray:
        """Bool (V,): True for words that may be appended now (not yet in the prompt)."""
        mask = ~self._in_seed.copy()
        mask[self._tokens] = False
        return mask

    def _set_task(self, index: int) -> None:
        self._task = self.tasks[index]
        if self.vocab_mode == "captions":
            words = caption_vocabulary(
                self.clip, self.target_image(), self._task.seed_prompt, size=self.V
            )
            extra = [w for w in DEFAULT_VOCABULARY if w not in words]
            self.vocabulary = [*words, *extra][: self.V]
        seed_words = set(self._task.seed_prompt.replace(",", " ").split())
        self._in_seed = np.array(
            [w in seed_words or f" {w}," in f" {self._task.seed_prompt}," for w in self.vocabulary]
        )
        allowed = int((~self._in_seed).sum())
        if allowed < self.n_appends:
            raise ValueError(
                f"Task {self._task.name!r}: only {allowed} vocabulary words are not already in "
                f"the seed prompt, fewer than n_appends={self.n_appends}; use a larger "
                "vocabulary or fewer appends."
            )

    def _obs(self) -> Any:
        V, T = self.V, self.n_appends
        multi_hot = np.zeros(V, np.float32)
        multi_hot[self._tokens] = 1.0
        prompt_emb = self._text_embeddings([self.prompt])[0]
        target_emb = self._target_embedding(self.task)
        parts = {"prompt_embedding": prompt_emb, "target_embedding": target_emb}
        if self.observe_image:
            parts["image_embedding"] = self.image_embeddings([self.prompt])[0].mean(axis=0)
        if self.observe_candidates:
            parts["candidate_similarity"] = self.candidate_similarities()
        parts = {k: np.clip(v, -1.0, 1.0).astype(np.float32) for k, v in parts.items()}
        if self.observation_mode == "dict":
            appended = np.full(T, V, np.int64)
            appended[: len(self._tokens)] = self._tokens
            return {"tokens": multi_hot, "appended": appended, **parts}
        progress = np.array([len(self._tokens) / T], np.float32)
        order = ["prompt_embedding", "image_embedding", "target_embedding", "candidate_similarity"]
        return np.concatenate([multi_hot, progress, *(parts[k] for k in order if k in parts)])

    def _info(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "appended": self.separator.join(self.vocabulary[t] for t in self._tokens),
            "task": self.task.name,
            "category": self.task.category,
        }

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        check_seed("seed", seed)
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"task"})
        if unknown:
            raise ValueError(f"Unknown reset options {unknown}; PromptAppend-v0 accepts 'task'.")
        index = options.get("task", self.task_index)
        if index is None:
            index = int(self.np_random.integers(len(self.tasks)))
        check_task_index("task", index, len(self.tasks))
        if self._task is not self.tasks[int(index)]:
            self._set_task(int(index))
        self._tokens = []
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._task is None:
            raise RuntimeError("Call reset() before step(); the episode has not started.")
        if len(self._tokens) >= self.n_appends:
            raise RuntimeError("The episode is over (all words appended); call reset().")
        a = discrete_action(
            action,
            self.V,
            "a vocabulary index",
            f": the vocabulary has {self.V} words (env.vocabulary)",
        )
        mask = self.action_masks()
        redirected = None
        if not mask[a]:
            if self.masked_action == "raise":
                raise ValueError(
                    f"Action {a} ({self.vocabulary[a]!r}) is masked: the word is already in the "
                    f"prompt {self.prompt!r}. Choose an action where env.action_masks() is True, "
                    "or make the env with masked_action='redirect'."
                )
            redirected, a = a, int(np.flatnonzero(np.roll(mask, -a))[0] + a) % self.V
        self._tokens.append(a)
        done = len(self._tokens) == self.n_appends
        info = self._info()
        reward = 0.0
        if done or self.reward_mode == "per_step":
            reward, info["image_similarity"], info["text_similarity"] = self.reward_of(self.prompt)
            info["reward_evaluations"] = self.reward_evaluations
            info["cache_hit_rate"] = self.cache_stats.hit_rate
        if redirected is not None:
            info["redirected_from"] = redirected
        return self._obs(), float(reward), done, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array'.")
            return None
        current = np.asarray(self._generator.images([self.prompt], self.generation_seeds[:1])[0])
        target = self.target_image()
        if target.shape != current.shape:
            size = current.shape[1::-1]
            target = np.asarray(Image.fromarray(target).resize(size, Image.Resampling.BICUBIC))
        gap = np.full((current.shape[0], 2, 3), 255, np.uint8)
        return np.concatenate([current, gap, target], axis=1)


def _check_vocabulary(words: Sequence[str]) -> list[str]:
    out = []
    for w in words:
        if not isinstance(w, str) or not w.strip():
            raise ValueError(f"Vocabulary entry {w!r} is not a non-empty string; remove it.")
        if w.strip() in out:
            raise ValueError(f"Vocabulary word {w.strip()!r} appears twice; remove the duplicate.")
        out.append(w.strip())
    return out
