"""Flow-matching (SD3, FLUX) and SDXL pipelines in DiffusionDenoise-v0 (issue 21, deliverable 1).

Every pipeline is a tiny random one (tests/tiny_flow.py) saved to a temp folder and loaded back by
the package's loader, as a user's checkpoint would be. The central checks:

* ODE mode (``noise_level=0``) and SDXL's DDIM noise mode reproduce the diffusers pipelines' images.
* The SDE step is Flow-GRPO's formula (and CPS is Wang & Yu's); the closed-form log-prob matches the
  empirical Gaussian of sampled steps; the closed-form KL matches a Monte Carlo estimate.
* A policy built from ``sampler.unet`` with the agents' own code reproduces the base step on flow
  models, through the same BaseSampler interface as DDIM.
"""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from tiny_flow import T5_LENGTH, saved, tiny_flux, tiny_sd3, tiny_sdxl

import diffenvs  # noqa: F401
from diffenvs.flow_logprob import flow_coefficients, flow_distribution, step_kl
from diffenvs.logprob import StepDistribution, gaussian_kl
from diffenvs.models import load_pipeline
from diffenvs.models.errors import InvalidModelError
from diffenvs.sampler import BaseSampler, FlowSampler

ENV_ID = "DiffusionDenoise-v0"
PROMPTS = ["one red circle", "two small blue stars on a grass field", "three green squares"]
BUILDERS = {
    "sd3": tiny_sd3,
    "sd3_no_t5": lambda: tiny_sd3(with_t5=False),
    "flux": tiny_flux,
    "sdxl": tiny_sdxl,
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_flow")
    return {name: saved(build(), root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def pipes(folders: dict[str, Path]) -> dict[str, object]:
    return {name: load_pipeline(folder) for name, folder in folders.items()}


def _env_kwargs(name: str, **kwargs):
    base = {"prompts": PROMPTS, "num_steps": 3, "reward": "colourfulness", "image_size": 16}
    if name != "sdxl":
        base["max_sequence_length"] = T5_LENGTH
    return {**base, **kwargs}


def _run_noise_episode(env, seed: int):
    """An episode fed the standard-normal draws a pipeline would make after x_T (seed ``seed``)."""
    obs, _ = env.reset(seed=seed)
    g = torch.Generator().manual_seed(seed)
    shape = obs["latent"].shape
    torch.randn((1, *shape), generator=g)  # x_T, drawn by reset
    done = False
    while not done:
        obs, _, done, _, info = env.step(torch.randn((1, *shape), generator=g)[0].numpy())
    core = env.unwrapped.core
    return core.decode(core.latents).permute(0, 2, 3, 1)[0].numpy(), info


# --------------------------------------------------------------------------------------------
# Loading


def test_loader_picks_the_pipeline_class_from_model_index(pipes) -> None:
    names = {k: type(v).__name__ for k, v in pipes.items()}
    assert names == {
        "sd3": "StableDiffusion3Pipeline",
        "sd3_no_t5": "StableDiffusion3Pipeline",
        "flux": "FluxPipeline",
        "sdxl": "StableDiffusionXLPipeline",
    }
    assert pipes["sd3_no_t5"].text_encoder_3 is None


def test_loader_refuses_other_layouts_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "PixArtAlphaPipeline", "transformer": ["diffusers", "PixArtTransformer2DModel"]}'
    )
    with pytest.raises(InvalidModelError, match="PixArtAlphaPipeline pipeline, which the"):
        load_pipeline(tmp_path)
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionXLPipeline", "text_encoder_2": ["t", "C"], '
        '"tokenizer_2": ["t", "C"], "unet": ["d", "U"], "vae": ["d", "V"], "scheduler": ["d", "S"]}'
    )
    with pytest.raises(InvalidModelError, match=r"lacks text_encoder, tokenizer.*SDXL refiner"):
        load_pipeline(tmp_path)


def test_a_folder_name_goes_through_the_shared_model_cache(folders) -> None:
    kwargs = _env_kwargs("sd3", noise_level=0.0)
    a = gym.make(ENV_ID, model=str(folders["sd3"]), **kwargs)
    b = gym.make(ENV_ID, model=str(folders["sd3"]), **kwargs)
    assert a.unwrapped.core.pipe is b.unwrapped.core.pipe
    assert isinstance(a.unwrapped.sampler, FlowSampler) and a.unwrapped.sampler.family == "sd3"


# --------------------------------------------------------------------------------------------
# Equivalence with the diffusers pipelines


@pytest.mark.parametrize(
    ("name", "guidance"),
    [("sd3", 4.0), ("sd3", 1.0), ("sd3_no_t5", 4.0), ("flux", 3.5), ("sdxl", 4.0), ("sdxl", 1.0)],
)
def test_episode_reproduces_the_pipeline_image(pipes, name: str, guidance: float) -> None:
    pipe, prompt, steps, seed = pipes[name], PROMPTS[1], 4, 7
    call = {"height": 16, "width": 16, "guidance_scale": guidance, "output_type": "np"}
    env_kwargs = {"guidance_scale": guidance, "num_steps": steps, "prompts": [prompt]}
    if name == "sdxl":  # the UNet family: DDIM with eta = 1, noise fed from the generator
        call["eta"] = 1.0
    else:  # flow models: the ODE (Euler) step, noise_level = 0
        call["max_sequence_length"] = T5_LENGTH
        env_kwargs["noise_level"] = 0.0
    ref = pipe(
        prompt, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), **call
    ).images[0]
    env = gym.make(ENV_ID, model=pipe, **_env_kwargs(name, **env_kwargs))
    image, info = _run_noise_episode(env, seed)
    assert image.shape == ref.shape == (16, 16, 3)
    assert float(np.abs(image - ref).max()) <= 1e-5
    np.testing.assert_array_equal(info["image"], (ref * 255).round().astype(np.uint8))


def test_flux_latents_are_packed_inside_the_model_call(pipes) -> None:
    from diffenvs.conditioning import pack_latents, unpack_latents

    pipe = pipes["flux"]
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    packed = pack_latents(x)
    torch.testing.assert_close(packed, pipe._pack_latents(x, 2, 4, 8, 8), rtol=0, atol=0)
    torch.testing.assert_close(unpack_latents(packed, 8, 8), x, rtol=0, atol=0)
    env = gym.make(ENV_ID, model=pipe, **_env_kwargs("flux", guidance_scale=3.5))
    sampler = env.unwrapped.sampler
    assert sampler.latent_shape == (4, 8, 8) and not sampler.do_cfg
    # The distilled guidance reaches the transformer: another scale, another velocity.
    emb = env.unwrapped.core._encode(PROMPTS[:2])
    k = torch.tensor([0, 1])
    with torch.no_grad():
        v = sampler.model_output(sampler.unet, x, k, emb)
        other = gym.make(ENV_ID, model=pipe, **_env_kwargs("flux", guidance_scale=1.5))
        v2 = other.unwrapped.sampler.model_output(sampler.unet, x, k, emb)
    assert v.shape == x.shape and (v - v2).abs().max() > 1e-4


# --------------------------------------------------------------------------------------------
# The flow step Gaussians


def _schedule(shift: float = 3.0, steps: int = 6):
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    return sched


def _flow_grpo_reference(v, x, sigmas, k, a, sde_type):
    """Flow-GRPO's SDE step and Wang & Yu's CPS step, written out per step in float64."""
    v, x = v.double(), x.double()
    s, s_next = float(sigmas[k]), float(sigmas[k + 1])
    dt = s_next - s
    if sde_type == "sde":
        denom = 1 - (float(sigmas[1]) if s == 1 else s)
        std_t = math.sqrt(s / denom) * a
        mean = x * (1 + std_t**2 / (2 * s) * dt) + v * (1 + std_t**2 * (1 - s) / (2 * s)) * dt
        return mean, std_t * math.sqrt(-dt)
    std = s_next * math.sin(a * math.pi / 2)
    x0, eps = x - s * v, x + (1 - s) * v
    return (1 - s_next) * x0 + math.sqrt(s_next**2 - std**2) * eps, std


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_sde_step_is_the_flow_grpo_formula(sde_type: str) -> None:
    sched = _schedule()
    assert float(sched.sigmas[0]) == 1.0  # the first step exercises the sigma = 1 guard
    g = torch.Generator().manual_seed(0)
    v, x = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    coeffs = flow_coefficients(sched.sigmas, 0.7, sde_type=sde_type)
    dist = flow_distribution(coeffs[torch.arange(6)], v, x)
    for k in range(6):
        mean, std = _flow_grpo_reference(v[k : k + 1], x[k : k + 1], sched.sigmas, k, 0.7, sde_type)
        torch.testing.assert_close(dist.mean[k : k + 1].double(), mean, rtol=1e-5, atol=1e-5)
        assert float(dist.std[k]) == pytest.approx(std, rel=1e-5, abs=1e-7)
    if sde_type == "cps":
        assert float(dist.std[-1]) == 0.0  # CPS's last step is deterministic
    assert torch.equal(dist.pred_original_sample, x - coeffs.sigma.reshape(-1, 1, 1, 1) * v)


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_noise_level_zero_is_the_euler_step_bit_for_bit(sde_type: str) -> None:
    sched = _schedule()
    levels = [0.0, 0.0, 0.7, 0.7, 0.0, 0.0]  # a window of SDE steps, the rest ODE
    coeffs = flow_coefficients(sched.sigmas, levels, sde_type=sde_type)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=g)
    for k, t in enumerate(sched.timesteps):
        v = torch.randn(1, 4, 8, 8, generator=g)
        dist = flow_distribution(coeffs[[k]], v, x)
        ref = sched.step(v, t, x).prev_sample
        if levels[k] == 0:
            assert float(dist.std[0]) == 0.0 and torch.equal(dist.mean, ref)
            assert float(dist.log_prob(ref)[0]) == 0.0  # deterministic step: log-prob 0
        else:
            assert float(dist.std[0]) > 0 and not torch.equal(dist.mean, ref)
        x = ref


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_closed_form_log_prob_matches_the_empirical_gaussian(sde_type: str) -> None:
    sched = _schedule()
    coeffs = flow_coefficients(sched.sigmas, 0.8, sde_type=sde_type)
    g = torch.Generator().manual_seed(2)
    v, x = torch.randn(1, 2, 4, 4, generator=g), torch.randn(1, 2, 4, 4, generator=g)
    k = 2
    dist = flow_distribution(coeffs[[k]], v, x)
    n = 20000
    samples = dist.mean + dist.std.reshape(-1, 1, 1, 1) * torch.randn(n, 2, 4, 4, generator=g)
    # The empirical Gaussian of the sampled steps: per-dimension mean and one pooled std.
    emp_mean = samples.mean(0, keepdim=True)
    emp_std = (samples - emp_mean).pow(2).mean().sqrt()
    assert float((emp_mean - dist.mean).abs().max()) < 5 * float(dist.std[0]) / math.sqrt(n)
    assert float(emp_std) == pytest.approx(float(dist.std[0]), rel=0.01)
    empirical = torch.distributions.Normal(emp_mean, emp_std).log_prob(samples).sum((1, 2, 3))
    closed = StepDistribution(
        dist.mean.expand(n, -1, -1, -1), dist.std.expand(n), dist.mean, dist.timestep, dist.timestep
    ).log_prob(samples)
    assert float((closed - empirical).abs().mean()) < 0.1  # 32 dims: nats, summed
    # The average log-prob is minus the Gaussian's entropy.
    d = 32
    entropy = d * (math.log(float(dist.std[0])) + 0.5 * math.log(2 * math.pi * math.e))
    assert float(closed.mean()) == pytest.approx(-entropy, abs=0.1)


def test_closed_form_kl_matches_monte_carlo_and_the_shared_std_case() -> None:
    g = torch.Generator().manual_seed(3)
    mp, mb = torch.randn(1, 2, 4, 4, generator=g), torch.randn(1, 2, 4, 4, generator=g)
    t = torch.zeros(1)
    p = StepDistribution(mp, torch.tensor([0.5]), mp, t, t)
    q = StepDistribution(mb, torch.tensor([0.7]), mb, t, t)
    n = 40000
    xs = p.mean + 0.5 * torch.randn(n, 2, 4, 4, generator=g)
    big_p = StepDistribution(mp.expand(n, -1, -1, -1), p.std.expand(n), mp, t, t)
    big_q = StepDistribution(mb.expand(n, -1, -1, -1), q.std.expand(n), mb, t, t)
    mc = (big_p.log_prob(xs) - big_q.log_prob(xs)).mean()
    assert float(step_kl(p, q)[0]) == pytest.approx(float(mc), rel=0.02)
    same = StepDistribution(mb, torch.tensor([0.5]), mb, t, t)
    torch.testing.assert_close(step_kl(p, same), gaussian_kl(mp, mb, p.std), rtol=1e-5, atol=1e-6)
    assert float(step_kl(p, p)[0]) == 0.0


# --------------------------------------------------------------------------------------------
# The env on flow models


@pytest.mark.parametrize("name", ["sd3", "flux"])
@pytest.mark.parametrize("action_mode", ["noise", "latent"])
def test_gymnasium_and_sb3_check_env(pipes, name: str, action_mode: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(
        ENV_ID,
        model=pipes[name],
        render_mode="rgb_array",
        **_env_kwargs(name, action_mode=action_mode, num_steps=2),
    )
    check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(env.unwrapped, warn=False)


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_sde_infos_log_probs_and_seeding(pipes, name: str) -> None:
    env = gym.make(
        ENV_ID, model=pipes[name], render_mode="rgb_array", **_env_kwargs(name, sde_type="cps")
    )
    sampler = env.unwrapped.sampler
    assert sampler.sde_type == "cps" and sampler.noise_level == (0.7, 0.7, 0.7)
    assert sampler.timesteps.dtype == torch.float32 and sampler.num_steps == 3
    obs, info = env.reset(seed=5)
    assert isinstance(info["timestep"], float) and obs["timestep"][0] == info["timestep"]
    assert info["next_std"] == pytest.approx(float(sampler.sigma[0]))
    frames = [env.render()]
    noise = np.random.default_rng(0).standard_normal(obs["latent"].shape).astype(np.float32)
    x_t = obs["latent"]
    obs, _, done, _, step = env.step(noise)
    # x_{t-1} = mean + std * noise, and the log-prob is that Gaussian's.
    np.testing.assert_allclose(obs["latent"], step["mean"] + step["std"] * noise, atol=1e-5)
    d = noise.size
    expected = -0.5 * float((noise.astype(np.float64) ** 2).sum()) - d * (
        math.log(step["std"]) + 0.5 * math.log(2 * math.pi)
    )
    assert step["log_prob"] == pytest.approx(expected, rel=1e-5)
    # The mean is the sampler's Gaussian for the observed latent and prompt.
    with torch.no_grad():
        emb = torch.as_tensor(env.unwrapped.core.embeds)
        out = sampler.model_output(sampler.unet, torch.as_tensor(x_t)[None], torch.tensor([0]), emb)
        dist = sampler.distribution(out, torch.as_tensor(x_t)[None], torch.tensor([0]))
    np.testing.assert_allclose(dist.mean[0].numpy(), step["mean"], atol=1e-6)
    while not done:
        frames.append(env.render())
        obs, _, done, _, step = env.step(noise)
    assert step["std"] == 0.0 and step["log_prob"] == 0.0  # CPS's last step
    assert step["image"].shape == (16, 16, 3) and np.array_equal(env.render(), step["image"])
    assert all(f.shape == (16, 16, 3) and f.dtype == np.uint8 for f in frames)
    # Same seed, same episode.
    again = gym.make(ENV_ID, model=pipes[name], **_env_kwargs(name, sde_type="cps"))
    o1, _ = env.reset(seed=11)
    o2, _ = again.reset(seed=11)
    np.testing.assert_array_equal(o1["latent"], o2["latent"])
    assert env.unwrapped.prompt == again.unwrapped.prompt


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_native_vector_env_matches_sync(pipes, name: str) -> None:
    kwargs = _env_kwargs(name, num_steps=2, model=pipes[name])
    native = gym.make_vec(ENV_ID, num_envs=2, **kwargs)
    sync = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync", **kwargs)
    on, info_n = native.reset(seed=4)
    os_, info_s = sync.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(3):  # crosses an episode end
        for key in on:
            np.testing.assert_allclose(on[key], os_[key], atol=1e-4)
        actions = rng.standard_normal((2, *native.single_action_space.shape)).astype(np.float32)
        on, rn, tn, _, info_n = native.step(actions)
        os_, rs, ts, _, info_s = sync.step(actions)
        assert sorted(info_n) == sorted(info_s)
        np.testing.assert_allclose(rn, rs, atol=1e-4)
        np.testing.assert_array_equal(tn, ts)


@pytest.mark.parametrize("name", ["sd3", "flux", "sdxl"])
def test_a_policy_copy_of_sampler_unet_reproduces_the_base_step(pipes, name: str) -> None:
    """The agents' PPO policy, written for DDIM, runs unchanged on SDXL, SD3 and FLUX."""
    from agents.ppo.config import PPOConfig
    from agents.ppo.policy import DiffusionActorCritic, build_policy_unet

    envs = gym.make_vec(
        ENV_ID, num_envs=2, model=pipes[name], **_env_kwargs(name, action_mode="latent")
    )
    sampler = envs.unwrapped.sampler
    assert isinstance(sampler, BaseSampler) and sampler.family == name
    policy = DiffusionActorCritic(
        build_policy_unet(sampler.unet, PPOConfig(finetune="lora")), sampler
    )
    obs, _ = envs.reset(seed=3)
    embeds = torch.as_tensor(obs["prompt_embeds"])
    gen = torch.Generator().manual_seed(4)
    for k in range(sampler.num_steps):
        x = torch.as_tensor(obs["latent"])
        with torch.no_grad():
            dist = policy.distribution(x, torch.full((2,), k), embeds)
        action = dist.sample(torch.randn(x.shape, generator=gen))
        obs, _, _, _, info = envs.step(action.numpy())
        torch.testing.assert_close(
            dist.mean, torch.as_tensor(np.stack(info["mean"])), rtol=0, atol=1e-6
        )
        torch.testing.assert_close(dist.std, torch.as_tensor(info["std"], dtype=torch.float32))
        torch.testing.assert_close(
            dist.log_prob(action), torch.as_tensor(info["log_prob"]).float(), rtol=1e-6, atol=1e-3
        )
        kl = sampler.kl(dist, dist)
        assert kl.shape == (2,) and float(kl.abs().max()) == 0.0
    if name != "sdxl":  # the forward process of flow matching: x_t = (1 - σ) x_0 + σ ε
        x0, eps = torch.randn(2, *sampler.latent_shape), torch.randn(2, *sampler.latent_shape)
        s = sampler.sigmas[1]
        torch.testing.assert_close(sampler.add_noise(x0, 1, eps), (1 - s) * x0 + s * eps)
        assert torch.equal(sampler.add_noise(x0, torch.tensor([0, 0]), eps), eps)  # σ_0 = 1


# --------------------------------------------------------------------------------------------
# Errors


def test_clear_errors(pipes) -> None:
    sd3, sdxl = pipes["sd3"], pipes["sdxl"]
    cases = [
        (sd3, {"scheduler": "ddim"}, ValueError, "Unknown scheduler 'ddim' for the flow-matching"),
        (sd3, {"noise_level": -0.1}, ValueError, r"noise_level values must be in \[0, 100\]"),
        (
            sd3,
            {"noise_level": 1.5, "sde_type": "cps"},
            ValueError,
            r"in \[0, 1\] for sde_type='cps'",
        ),
        (sd3, {"noise_level": [0.7, 0.7]}, ValueError, "noise_level has 2 values but there are 3"),
        (sd3, {"sde_type": "ode"}, ValueError, "Unknown sde_type 'ode'"),
        (sd3, {"image_size": 10}, ValueError, "cannot split into 2 x 2 patches"),
        (sd3, {"image_size": 64}, ValueError, "cover 32 pixels per side at most"),
        (sdxl, {"noise_level": 0.5}, ValueError, "configure the SDE of flow-matching models"),
        (pipes["flux"], {"negative_prompt": "blurry"}, ValueError, "guidance-distilled"),
    ]
    for pipe, kwargs, err, match in cases:
        name = "sdxl" if pipe is sdxl else "flux" if pipe is pipes["flux"] else "sd3"
        with pytest.raises(err, match=match):
            gym.make(ENV_ID, model=pipe, **_env_kwargs(name, **kwargs))
    with pytest.raises(ValueError, match="max_sequence_length is the T5 prompt length"):
        gym.make(ENV_ID, model=sdxl, **_env_kwargs("sdxl", max_sequence_length=8))
    env = gym.make(ENV_ID, model=sd3, **_env_kwargs("sd3"))
    env.reset(seed=0)
    with pytest.raises(
        ValueError, match=r"Noise action has shape \(4, 8, 7\), expected \(4, 8, 8\)"
    ):
        env.step(np.zeros((4, 8, 7), dtype=np.float32))
    with pytest.raises(ValueError, match="do not match this model's"):
        env.unwrapped.sampler.model_output(
            env.unwrapped.sampler.unet,
            torch.zeros(1, 4, 8, 8),
            torch.tensor([0]),
            torch.zeros(1, 3, 32),
        )


def test_sde_step_with_sigmas_stuck_near_one_is_refused_with_a_way_out():
    """A schedule whose sigmas stay ≈ 1 (FLUX's shift on tiny images) gives an exploding SDE step:
    a clear error that names CPS and the noise window; CPS and a window of zeros there work."""
    import torch

    from diffenvs.flow_logprob import MAX_SDE_STD, flow_coefficients

    sigmas = torch.tensor([1.0, 0.99999, 0.9999, 0.5, 0.0])
    with pytest.raises(ValueError, match="sde_type='cps'"):
        flow_coefficients(sigmas, 0.7)
    assert float(flow_coefficients(sigmas, 0.7, sde_type="cps").std.max()) <= 1.0
    windowed = flow_coefficients(sigmas, [0.0, 0.0, 0.0, 0.7])
    assert float(windowed.std.max()) <= MAX_SDE_STD
