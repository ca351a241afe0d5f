"""Preference learning: comparison tasks, synthetic labelers and reward models trained on rankings.

    tasks = make_tasks("runs/pref/tasks", n_tasks=200)             # world samples, 4 per prompt
    labeler = SyntheticLabeler("blurred")                            # the oracle with a taste
    write_sets("runs/pref/labels.jsonl", [labeler.rank(t) for t in tasks])
    train_reward_model(TrainRewardConfig(Path("runs/pref/labels.jsonl"), Path("runs/pref/rm")))
    gym.make("DiffusionDenoise-v0", reward="learned:runs/pref/rm")  # use it as an env reward

See ``docs/preference.md``.
"""

from diffenvs.preference.data import RankedSet, dense_ranks, read_sets, write_sets
from diffenvs.preference.labelers import SyntheticLabeler
from diffenvs.preference.reward_model import (
    RewardModel,
    build_reward_model,
    load_reward_model,
    preference_accuracy,
)
from diffenvs.preference.tasks import make_tasks
from diffenvs.preference.train import TrainRewardConfig, bradley_terry_loss, train_reward_model

__all__ = [
    "RankedSet",
    "RewardModel",
    "SyntheticLabeler",
    "TrainRewardConfig",
    "bradley_terry_loss",
    "build_reward_model",
    "dense_ranks",
    "load_reward_model",
    "make_tasks",
    "preference_accuracy",
    "read_sets",
    "train_reward_model",
    "write_sets",
]
