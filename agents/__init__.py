"""The agents of the suite, one package per family.

* :mod:`agents.ppo` — diffusion-policy PPO on ``DiffusionDenoise-v0``.
* :mod:`agents.prompt` — SQL, REINFORCE and baselines on ``PromptAppend-v0``.
* :mod:`agents.grid` — tabular Q-learning, SARSA and random on ``GrammarGrid-v0``.
* :mod:`agents.adapters` — Stable-Baselines3 and Tianshou 2 on each env.
* :mod:`agents.common` — what several agents share (the agent contract, episode runners, seeding,
  run folders).

Each family's ``__init__`` declares ``AGENTS`` (:class:`agents.common.contract.AgentSpec`), which
``diffenvs train`` discovers; it imports only light config modules.
"""
