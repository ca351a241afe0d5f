"""Seeding every random number generator an agent draws from."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int, threads: int = 1) -> None:
    """Seed Python's, NumPy's and torch's global generators and fix torch's CPU threads.

    Environments are seeded separately, through ``env.reset(seed=...)``.
    """
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
