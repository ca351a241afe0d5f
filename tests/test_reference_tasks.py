"""Reference tasks: exact mixtures, exact optima, the exact denoiser, the envs and the metrics."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import diffenvs  # noqa: F401  (registers the envs)
from diffenvs.envs.contract import random_play
from diffenvs.reference import (
    GaussianMixture,
    QuadraticReward,
    ReferenceTask,
    knn_kl_divergence,
    make_mixture,
    make_quadratic_reward,
    sample_policy,
    sliced_wasserstein,
)

REFERENCE_IDS = ("ReferenceGMM2D-v0", "ReferenceGMM2DFlow-v0", "ReferenceGMMND-v0")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _full_cov_mixture() -> GaussianMixture:
    g = torch.Generator().manual_seed(3)
    a = torch.randn((3, 3, 3), dtype=torch.float64, generator=g)
    covs = a @ a.transpose(1, 2) * 0.2 + 0.1 * torch.eye(3, dtype=torch.float64)
    means = 1.5 * torch.randn((3, 3), dtype=torch.float64, generator=g)
    return GaussianMixture([0.2, 0.5, 0.3], means, covs)


REWARDS = {
    "linear": QuadraticReward.linear([0.8, -0.5, 0.3]),
    "quadratic": QuadraticReward.target([0.5, 1.0, -1.0], scale=0.7),
    "general": QuadraticReward(
        torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64),
        torch.tensor([[0.5, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.2]], dtype=torch.float64),
        0.4,
    ),
}


@pytest.mark.parametrize("name", list(REWARDS))
@pytest.mark.parametrize("beta", [1.5, 4.0])
def test_exact_optimum_matches_importance_weighted_base_samples(name, beta):
    base, reward = _full_cov_mixture(), REWARDS[name]
    x = base.sample(400_000, torch.Generator().manual_seed(0))
    logw = reward(x) / beta
    w = torch.softmax(logw, 0)  # self-normalised importance weights of p* against p
    opt = base.tilt(reward, beta)
    task = ReferenceTask(base, reward)
    point = task.point(beta)
    mc_log_z = float(torch.logsumexp(logw, 0) - math.log(len(x)))
    assert point.log_partition == pytest.approx(mc_log_z, abs=0.02)
    assert point.expected_reward == pytest.approx(float((w * reward(x)).sum()), abs=0.03)
    # KL(p*||p) = E_{p*}[log p*/p] = E_p[w' log w'] with w' = exp(r/β)/Z.
    mc_kl = float((w * (logw - mc_log_z)).sum())
    assert point.kl == pytest.approx(mc_kl, abs=0.03)
    assert torch.allclose(opt.mean(), (w[:, None] * x).sum(0), atol=0.03)
    # Exact samples of p* agree with the closed form too.
    y = opt.sample(200_000, torch.Generator().manual_seed(1))
    assert float(reward(y).mean()) == pytest.approx(point.expected_reward, abs=0.03)


def test_tilted_density_is_base_times_exp_reward_over_beta():
    base, reward, beta = _full_cov_mixture(), REWARDS["general"], 1.3
    opt = base.tilt(reward, beta)
    x = 2 * torch.randn((50, 3), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    gap = opt.log_prob(x) - base.log_prob(x) - reward(x) / beta
    assert torch.allclose(gap, torch.full_like(gap, -base.log_partition(reward, beta)), atol=1e-9)


@pytest.mark.parametrize("a,s", [(1.0, 0.0), (0.8, 0.6), (0.05, 0.999)])
def test_score_and_posterior_mean_match_autograd_of_the_log_density(a, s):
    mix = _full_cov_mixture()
    x = 2 * torch.randn((20, 3), dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(x, a, s).sum(), x)
    x = x.detach()
    assert torch.allclose(mix.score(x, a, s), grad, atol=1e-9)
    if s > 0:  # Tweedie: a E[x_0 | x_t] = x_t + s² ∇ log p_t(x_t)
        assert torch.allclose(a * mix.posterior_mean(x, a, s), x + s * s * grad, atol=1e-9)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "flow"])
def test_denoiser_is_the_exact_epsilon_or_velocity_and_a_zero_residual(scheduler):
    env = gym.make("ReferenceGMM2D-v0", scheduler=scheduler)
    sampler, task = env.unwrapped.sampler, env.unwrapped.task
    unet = sampler.unet
    x = torch.randn((16, 2, 1, 1), generator=torch.Generator().manual_seed(0))
    emb = torch.ones((16, 1, 1))
    k = torch.full((16,), 5)
    t = sampler.timesteps[k]
    out = unet(x, t, encoder_hidden_states=emb, timestep_cond=None, return_dict=False)[0]
    flat = x.reshape(16, 2).double()
    if scheduler == "flow":
        sigma = float(t[0]) / 1000
        x0 = task.base.posterior_mean(flat, 1 - sigma, sigma)
        expected = (flat - x0) / sigma
    else:
        ac = float(env.unwrapped.core.scheduler.alphas_cumprod[int(t[0])])
        x0 = task.base.posterior_mean(flat, math.sqrt(ac), math.sqrt(1 - ac))
        expected = (flat - math.sqrt(ac) * x0) / math.sqrt(1 - ac)
    assert torch.allclose(out.reshape(16, 2).double(), expected, atol=1e-5)
    assert unet(x, t, encoder_hidden_states=emb).sample.shape == x.shape
    # A trainable copy is the base model until it trains; after a change its steps' KL is positive.
    policy = copy.deepcopy(unet).requires_grad_(True)
    same = sampler.distribution(sampler.model_output(policy, x, k, emb), x, k)
    base = sampler.distribution(sampler.model_output(unet, x, k, emb), x, k)
    assert torch.equal(same.mean, base.mean)
    with torch.no_grad():
        policy.residual[-1].bias.fill_(0.5)
    moved = sampler.distribution(sampler.model_output(policy, x, k, emb), x, k)
    # The residual is a control: it moves step k's mean by σ_k² · 0.5.
    shift = (moved.mean - base.mean).reshape(16, 2)
    assert torch.allclose(
        shift, torch.full_like(shift, 0.5 * float(sampler.sigma[5]) ** 2), rtol=1e-3
    )


@pytest.mark.parametrize("scheduler", ["ddim", "flow"])
def test_the_base_sampler_samples_the_mixture_up_to_discretisation(scheduler):
    env = gym.make("ReferenceGMM2D-v0", scheduler=scheduler)
    sampler, task = env.unwrapped.sampler, env.unwrapped.task
    out = sample_policy(sampler, sampler.unet, 4000, seed=0)
    assert torch.equal(out["path_kl"], torch.zeros(4000, dtype=torch.float64))
    exact = task.base.sample(4000, torch.Generator().manual_seed(1))
    far = task.optimum(0.5).sample(4000, torch.Generator().manual_seed(2))
    assert sliced_wasserstein(out["samples"], exact) < 0.1 < sliced_wasserstein(out["samples"], far)


def test_flow_step_is_the_flow_grpo_sde_step():
    env = gym.make("ReferenceGMM2D-v0", scheduler="flow", noise_level=0.7, num_steps=10)
    sampler = env.unwrapped.sampler
    x, v = torch.randn((4, 2, 1, 1)), torch.randn((4, 2, 1, 1))
    for k in (0, 3, 9):
        s, s_next = 1 - k / 10, 1 - (k + 1) / 10
        dt = s_next - s
        tilde = 0.7 * math.sqrt(s / (1 - (s if s < 1 else 0.9)))
        mean = x + (v + tilde**2 / (2 * s) * (x + (1 - s) * v)) * dt
        dist = sampler.distribution(v, x, torch.full((4,), k))
        assert torch.allclose(dist.mean, mean, atol=1e-6)
        assert torch.allclose(dist.std, torch.full((4,), tilde * math.sqrt(-dt)), atol=1e-6)


def test_metrics_are_calibrated_on_known_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn((4000, 2), dtype=torch.float64, generator=g)
    assert sliced_wasserstein(x, x) == 0.0
    shift = torch.tensor([3.0, 4.0], dtype=torch.float64)
    # Every projection of a shift by m moves by θ·m: SW2 = |m| / sqrt(d).
    assert sliced_wasserstein(x + shift, x, projections=2000) == pytest.approx(
        5 / math.sqrt(2), rel=0.03
    )
    y = torch.randn((4000, 2), dtype=torch.float64, generator=g)
    # KL(N(0, I) || N((1, 0), I)) = 0.5
    assert knn_kl_divergence(x, y + torch.tensor([1.0, 0.0], dtype=torch.float64)) == pytest.approx(
        0.5, abs=0.1
    )
    assert abs(knn_kl_divergence(x, y)) < 0.05


@pytest.mark.parametrize("env_id", REFERENCE_IDS)
@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "flow"])
@pytest.mark.parametrize("action_mode", ["noise", "latent"])
def test_reference_envs_pass_gymnasiums_checker_and_the_contract(env_id, scheduler, action_mode):
    env = gym.make(
        env_id, scheduler=scheduler, action_mode=action_mode, num_steps=5, render_mode="rgb_array"
    )
    check_env(env.unwrapped, skip_render_check=False)
    random_play(env, 12, seed=0)
    obs, info = env.reset(seed=3)
    assert obs["latent"].shape == env.unwrapped.core.latent_shape and "next_mean" in info
    done = False
    while not done:
        obs, reward, done, _, info = env.step(env.action_space.sample())
    x0 = torch.as_tensor(info["reward_details"]["sample"], dtype=torch.float64)
    assert reward == pytest.approx(
        float(env.unwrapped.task.reward(x0[None])[0]), rel=1e-5, abs=1e-5
    )
    assert info["image"].shape == (32, 32, 3) and env.render().dtype == np.uint8


def test_native_vector_env_matches_the_single_env_and_scales():
    vec = gym.make_vec("ReferenceGMM2D-v0", num_envs=3, num_steps=6)
    single = [gym.make("ReferenceGMM2D-v0", num_steps=6) for _ in range(3)]
    obs_v, _ = vec.reset(seed=10)
    for i, e in enumerate(single):
        e.reset(seed=10 + i)
    rng = np.random.default_rng(0)
    for _ in range(6):
        a = rng.standard_normal((3, 2, 1, 1)).astype(np.float32)
        obs_v, r_v, term, _, _ = vec.step(a)
        outs = [e.step(a[i]) for i, e in enumerate(single)]
    assert term.all()
    assert np.allclose(obs_v["latent"], np.stack([o[0]["latent"] for o in outs]), atol=1e-5)
    assert np.allclose(r_v, [o[1] for o in outs], atol=1e-5)


def test_kl_penalty_and_latent_mode_log_probs():
    env = gym.make("ReferenceGMM2D-v0", action_mode="latent", kl_coef=0.5, num_steps=4)
    _, info = env.reset(seed=0)
    mean = info["next_mean"]
    env.unwrapped.set_policy_log_prob(0.0)
    _, reward, _, _, step_info = env.step(mean + 0.1)
    assert step_info["kl"] >= 0 and reward == pytest.approx(-0.5 * step_info["kl"])


def test_tasks_and_errors_say_what_to_pass():
    assert make_mixture("random:3", dim=5).dim == 5
    assert make_quadratic_reward("quadratic:1,2@4").Q[0, 0] == 4
    with pytest.raises(ValueError, match="2-D"):
        make_mixture("ring", dim=3)
    with pytest.raises(ValueError, match="Unknown reference reward"):
        make_quadratic_reward("colourfulness")
    with pytest.raises(ValueError, match="3-D"):
        make_quadratic_reward("linear:1,0", dim=3)
    with pytest.raises(ValueError, match="classifier-free guidance"):
        gym.make("ReferenceGMM2D-v0", guidance_scale=4.0)
    with pytest.raises(ValueError, match="not integrable"):
        make_mixture("ring").tilt(
            QuadraticReward.target([0, 0], 1.0).__class__(
                torch.zeros(2, dtype=torch.float64), -torch.eye(2, dtype=torch.float64) * 100
            ),
            1.0,
        )
    env = gym.make("ReferenceGMM2D-v0", prompts=["a", "b"])
    with pytest.raises(ValueError, match="not conditions"):
        env.reset(options={"prompt": "c"})
    obs, _ = env.reset(options={"prompt": "b"})
    assert obs["prompt_embeds"].tolist() == [[0.0, 1.0]]


def test_ppo_trains_on_the_reference_task_unchanged(tmp_path):
    from agents.ppo.config import PPOConfig
    from agents.ppo.train import train

    cfg = PPOConfig(
        preset="reference",
        num_updates=2,
        num_envs=8,
        samples_per_prompt=8,
        minibatch_size=40,
        eval_episodes=8,
        save=False,
        progress=False,
        output_dir=str(tmp_path),
        explicit=(
            "num_updates",
            "num_envs",
            "samples_per_prompt",
            "minibatch_size",
            "eval_episodes",
            "save",
            "progress",
        ),
    )
    result = train(cfg)
    assert len(result["history"]) == 2 and np.isfinite(result["history"][-1]["kl"])
    changed = [
        k for k, v in result["params"].items() if not torch.equal(v, result["initial_params"][k])
    ]
    assert changed and all(k.startswith("unet.residual") for k in changed)


def test_path_kl_of_a_constant_control_is_exact():
    env = gym.make("ReferenceGMM2D-v0", scheduler="flow", num_steps=8)
    sampler = env.unwrapped.sampler
    policy = copy.deepcopy(sampler.unet)
    with torch.no_grad():
        policy.residual[-1].bias.fill_(0.5)
    out = sample_policy(sampler, policy, 64, seed=0)
    # Each step's mean moves by σ_k² u, u = (0.5, 0.5): KL_k = σ_k² ||u||² / 2.
    expected = float((sampler.sigma.double() ** 2).sum()) * 0.25
    assert torch.allclose(
        out["path_kl"], torch.full((64,), expected, dtype=torch.float64), rtol=1e-4
    )


@pytest.mark.parametrize("action_mode", ["noise", "latent"])
def test_sb3_check_env(action_mode):
    sb3_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    sb3_checker.check_env(
        gym.make("ReferenceGMMND-v0", action_mode=action_mode).unwrapped, warn=False
    )
