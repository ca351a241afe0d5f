"""From rankings to an env reward, end to end on the embedded world (about a minute on 2 cores).

1. Make comparison tasks: world-model samples, four seeds per prompt.
2. Label them with a synthetic labeler that likes blurred images (the oracle stands in for a
   person; swap in `diffenvs label serve` + `diffenvs label export` for real labels).
3. Train a CLIP-embedding reward model with the Bradley-Terry loss (Kristiansen & Vågen 2023, eq. 5.1).
4. Use it as the terminal reward of DiffusionDenoise-v0.

python examples/preference_reward_model.py --out runs/pref_example

Expected result with the defaults (measured, 40 training tasks): the reward model reaches a
held-out preference accuracy of about 0.72 (0.719 measured; chance is 0.5; its validation
accuracy on the small validation split was only 0.424), is saved to runs/pref_example/reward_model,
and one seeded base-sampler episode scores a standardised learned reward of -1.136 (the same on
every run; one image, so any value within a few standard deviations of 0 is ordinary). About a
minute on a busy 2-core CPU.
"""

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import tyro

import diffenvs  # noqa: F401  (registers the environments)
from diffenvs.preference import (
    SyntheticLabeler,
    TrainRewardConfig,
    make_tasks,
    train_reward_model,
    write_sets,
)


@dataclass
class Args:
    out: Path = Path("runs/pref_example")
    n_tasks: int = 40
    preference: str = "blurred"


def main(args: Args) -> None:
    train = make_tasks(args.out / "train", args.n_tasks, num_inference_steps=10)
    held = make_tasks(args.out / "held", 12, split="heldout", num_inference_steps=10, seed=1)
    labeler = SyntheticLabeler(args.preference)
    write_sets(args.out / "train_labels.jsonl", [labeler.rank(t) for t in train])
    write_sets(args.out / "held_labels.jsonl", [labeler.rank(t) for t in held])
    result = train_reward_model(
        TrainRewardConfig(
            args.out / "train_labels.jsonl",
            args.out / "reward_model",
            heldout_labels=args.out / "held_labels.jsonl",
        )
    )
    print(f"held-out preference accuracy: {result['heldout_accuracy']:.3f}")

    # Noise mode with standard-normal actions is the base model's own sampler.
    reward = f"learned:{args.out / 'reward_model'}"
    env = gym.make("DiffusionDenoise-v0", num_steps=10, action_mode="noise", reward=reward)
    env.reset(seed=0, options={"prompt": "two small red stars on the left of a grass field"})
    env.action_space.seed(0)  # its samples are the episode's noise
    terminated = False
    while not terminated:
        _, score, terminated, _, _ = env.step(env.action_space.sample())
    print(f"one episode under the learned reward: {score:.3f} (standardised)")


if __name__ == "__main__":
    main(tyro.cli(Args))
