"""The leaderboard's tasks: what an agent optimises on ``DiffusionDenoise-v0``, and how it is judged.

A task fixes everything but the algorithm: the model, the training and held-out prompts, the
reward, the sampler (steps, guidance, eta) and the held-out evaluation. Each names an
**independent** reading of the same goal where the reward is a proxy: an oracle-based reward is
re-read by the world's independent judge (a different classifier that never enters a loss), so a
policy that games the oracle shows a gap between the two. Every task also reports the judge's
prompt following on the held-out prompts, so a reward bought by forgetting the prompt is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    reward: str
    """A ``diffenvs.make_reward`` name: the reward every agent trains on."""
    prompts: str
    """Training prompts (a prompt source: 'world', 'counts', 'prompt:TEXT', a file)."""
    eval_prompts: str
    """Held-out prompts of the evaluation (the same images, seeds and noise for every agent)."""
    num_steps: int = 10
    guidance_scale: float = 4.0
    eta: float = 1.0
    model: str = "world"
    independent_target: str | None = None
    """What the judge checks as the independent reading of the reward: an oracle target
    ('pastel', 'prompt:count'), or None where the reward is exact (pixel distance, JPEG size)."""
    eval_episodes: int = 32
    env_id: str = "DiffusionDenoise-v0"
    kl_coef: float | None = None
    """β of a KL-regularised task (maximise E[r] - β·KL to the base model): entrants with a KL
    term use it, and the reference tasks measure the distance to the optimum p*_β. None: the
    task is the reward alone (entrants regularise as they see fit)."""
    images: int = 640
    """Training images per cell (the default budget; ``--images`` overrides it for every task)."""
    recipe: dict[str, Any] = field(default_factory=dict)
    """Hyper-parameters that suit the task's scale, for entrants that take them:
    ``images_per_update``, ``samples_per_prompt``, ``learning_rate``; PPO-specific keys
    (``num_epochs``, ``clip_range``, ...) are passed to the PPO entrants as they are."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def world_only(self) -> bool:
        """Whether the task runs on the embedded world (its judge reads the images)."""
        return self.env_id == "DiffusionDenoise-v0" and self.model == "world"

    @property
    def is_reference(self) -> bool:
        """A reference task: an exact diffusion model of a Gaussian mixture, optimum known."""
        return self.env_id.startswith("ReferenceGMM")

    def env_options(self) -> dict[str, Any]:
        """Keyword arguments of the task's env shared by every agent's env (its id: ``env_id``)."""
        return {
            "model": self.model,
            "num_steps": self.num_steps,
            "guidance_scale": self.guidance_scale,
            "eta": self.eta,
            "reward": self.reward,
            **self.env_kwargs,
        }


_TARGET_PROMPT = "prompt:one large yellow star in the middle of an ocean"

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            name="target-image",
            summary="every sample of one prompt moves onto a fixed target image (pixel RMSE; "
            "Kristiansen & Vågen 2023, Exp. 1)",
            reward="target_rmse",
            prompts=_TARGET_PROMPT,
            eval_prompts=_TARGET_PROMPT,
            num_steps=4,
        ),
        Task(
            name="pastel",
            summary="a style the prompts never ask for: the oracle's probability of 'pastel'; "
            "the judge re-reads it",
            reward="oracle:pastel",
            prompts="counts",
            eval_prompts="counts:heldout",
            num_steps=4,
            independent_target="pastel",
        ),
        Task(
            name="colourfulness",
            summary="colourfulness (Kristiansen & Vågen 2023, Exp. 2) on world prompts",
            reward="colourfulness",
            prompts="world",
            eval_prompts="world:heldout",
            num_steps=4,
        ),
        Task(
            name="jpeg",
            summary="JPEG compressibility (minus the file size in kB; DDPO's first task)",
            reward="jpeg_compressibility",
            prompts="world",
            eval_prompts="world:heldout",
            num_steps=4,
        ),
        Task(
            name="prompt-shape",
            summary="prompt alignment on the world's hardest attribute: twice the oracle's "
            "probability of the prompt's shape plus its probability of the whole prompt (the "
            "recipe of docs/results/prompt_alignment.md); the judge re-reads the shape",
            reward="2*oracle:prompt:shape+oracle",
            prompts="world",
            eval_prompts="world:heldout",
            num_steps=4,
            independent_target="prompt:shape",
            eval_episodes=64,
        ),
        *(
            Task(
                name=f"reference-{tag}",
                summary=f"the exact diffusion model of {what}, reward {reward}, KL weight β = 1: "
                "the KL-regularised optimum p*_β is known in closed form (docs/envs/reference.md)",
                reward=reward,
                prompts="prompt:reference",
                eval_prompts="prompt:reference",
                num_steps=20,
                guidance_scale=1.0,
                model=model,
                env_id=env_id,
                kl_coef=1.0,
                images=12_800,
                eval_episodes=4_000,
                recipe={
                    "images_per_update": 64,
                    "samples_per_prompt": 64,
                    "learning_rate": 1e-3,
                    "num_epochs": 2,
                    "clip_range": 0.2,
                    "logprob_reduction": "sum",
                    "group_std": False,
                    "adv_clip": 1000.0,
                    "reward_norm": "none",
                    "pg_min_std": 0.0,
                },
            )
            for tag, env_id, model, what, reward in (
                ("2d", "ReferenceGMM2D-v0", "ring", "an 8-mode ring in 2-D (DDIM)", "linear"),
                ("2d-flow", "ReferenceGMM2DFlow-v0", "ring", "the same ring (flow SDE)", "linear"),
            )
        ),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"Unknown leaderboard task {name!r}; choose from {sorted(TASKS)}.")
    return TASKS[name]
