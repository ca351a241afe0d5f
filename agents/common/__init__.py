"""What several agents share; nothing here belongs to one algorithm.

* :mod:`~agents.common.contract` — the agent contract (``AgentSpec``, ``discover``) the CLI reads.
* :mod:`~agents.common.cli_args` — which config fields a command line names (presets).
* :mod:`~agents.common.seeding` — ``seed_everything``.
* :mod:`~agents.common.runs` — run folders and config metadata.
* :mod:`~agents.common.grid` — the ``GrammarGrid-v0`` episode runner and Table 3 statistics.
* :mod:`~agents.common.prompt_env` — ``PromptAppend-v0`` settings, greedy decoding, final report.
* :mod:`~agents.common.vector` — per-env infos from Gymnasium vector envs.
"""
