"""Every environment id of the suite, registered with Gymnasium in this one place."""

from __future__ import annotations

import gymnasium as gym

# id -> (entry point, vector entry point or None, max_episode_steps or None)
_ENVS: dict[str, tuple[str, str | None, int | None]] = {
    "GrammarGrid-v0": ("diffenvs.envs.grammar_grid:GrammarGridEnv", None, 100),
    "DiffusionDenoise-v0": (
        "diffenvs.envs.diffusion_denoise:DiffusionDenoiseEnv",
        "diffenvs.envs.denoise_vector:DiffusionDenoiseVectorEnv",
        None,
    ),
    "PromptAppend-v0": ("diffenvs.envs.prompt_append:PromptAppendEnv", None, None),
    "ReferenceGMM2D-v0": (
        "diffenvs.envs.reference_gmm:ReferenceGMM2DEnv",
        "diffenvs.envs.reference_gmm:ReferenceGMM2DVectorEnv",
        None,
    ),
    "ReferenceGMM2DFlow-v0": (
        "diffenvs.envs.reference_gmm:ReferenceGMM2DFlowEnv",
        "diffenvs.envs.reference_gmm:ReferenceGMM2DFlowVectorEnv",
        None,
    ),
    "ReferenceGMMND-v0": (
        "diffenvs.envs.reference_gmm:ReferenceGMMNDEnv",
        "diffenvs.envs.reference_gmm:ReferenceGMMNDVectorEnv",
        None,
    ),
}

ENV_IDS: tuple[str, ...] = tuple(_ENVS)


def register_envs() -> None:
    for env_id, (entry, vector_entry, max_steps) in _ENVS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=entry,
            vector_entry_point=vector_entry,
            max_episode_steps=max_steps,
        )
