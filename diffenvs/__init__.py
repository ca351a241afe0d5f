"""diffenvs: Gymnasium environments for reinforcement learning on text-to-image diffusion models.

Importing the package registers every environment with Gymnasium::

    import gymnasium as gym
    import diffenvs  # noqa: F401

    env = gym.make("GrammarGrid-v0")
"""

from diffenvs.registration import ENV_IDS, register_envs

__version__ = "0.1.0"

register_envs()

__all__ = ["ENV_IDS", "__version__", "register_envs"]
