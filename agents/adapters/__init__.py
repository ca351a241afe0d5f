"""Thin adapters that run Stable-Baselines3 (:mod:`agents.adapters.sb3`) and Tianshou 2
(:mod:`agents.adapters.tianshou`) algorithms on the diffenvs environments.

Each library gets one module per env (``denoise``, ``grammar``, ``prompt``); the small networks
over ``DiffusionDenoise-v0`` observations that both use are in :mod:`agents.adapters.nets`.
"""
