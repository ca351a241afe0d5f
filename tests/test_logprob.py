"""Step log-probabilities agree with diffusers' own scheduler steps and with plain Gaussian math."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from diffenvs.logprob import (
    gaussian_log_prob,
    k3_kl,
    noise_log_prob,
    previous_timestep,
    step_distribution,
    step_log_prob,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # Tiny models run fastest on one thread, and two threads thrash when the cores are busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SD_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
SHAPE = (3, 4, 8, 8)


def _ddpm(**kwargs) -> DDPMScheduler:
    # As the env builds it: DDPM from an SD checkpoint's (DDIM/PNDM) scheduler config.
    return DDPMScheduler.from_config(DDIMScheduler(**SD_CONFIG).config, **kwargs)


def _tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(SHAPE, generator=g),
        torch.randn(SHAPE, generator=g),
        torch.randn(SHAPE, generator=g),
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_ddim_matches_scheduler_step(prediction_type, eta):
    sched = DDIMScheduler(**SD_CONFIG, prediction_type=prediction_type)
    sched.set_timesteps(10)
    for t in sched.timesteps:
        out, x, noise = _tensors(int(t))
        ref = sched.step(out, t, x, eta=eta, variance_noise=noise).prev_sample
        dist = step_distribution(sched, out, t, x, eta=eta)
        torch.testing.assert_close(dist.sample(noise), ref, atol=1e-6, rtol=0)
        assert dist.std.shape == (SHAPE[0],) and bool((dist.std > 0).all())


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddpm_matches_scheduler_step(variance_type, prediction_type):
    sched = _ddpm(variance_type=variance_type, prediction_type=prediction_type)
    sched.set_timesteps(8)
    for t in sched.timesteps:
        out, x, _ = _tensors(int(t))
        ref = sched.step(out, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
        # DDPMScheduler draws its noise with randn from the generator it is given.
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
        dist = step_distribution(sched, out, t, x)
        torch.testing.assert_close(dist.sample(noise), ref, atol=1e-6, rtol=0)


def test_ddpm_step_at_t0_is_deterministic_with_zero_log_prob():
    sched = _ddpm(steps_offset=0)
    sched.set_timesteps(5)
    assert int(sched.timesteps[-1]) == 0
    out, x, noise = _tensors()
    dist = step_distribution(sched, out, sched.timesteps[-1], x)
    assert bool((dist.std == 0).all())
    torch.testing.assert_close(dist.sample(noise), dist.mean)
    assert torch.equal(dist.log_prob(dist.mean + noise), torch.zeros(SHAPE[0]))
    ref = sched.step(out, sched.timesteps[-1], x).prev_sample
    torch.testing.assert_close(dist.mean, ref, atol=1e-6, rtol=0)


def test_log_prob_is_the_summed_diagonal_gaussian():
    sched = DDIMScheduler(**SD_CONFIG)
    sched.set_timesteps(10)
    out, x, prev = _tensors()
    t = sched.timesteps[3]
    dist = step_distribution(sched, out, t, x, eta=1.0)
    std = dist.std[0]
    ref = torch.distributions.Normal(dist.mean, std).log_prob(prev).sum((1, 2, 3))
    torch.testing.assert_close(
        step_log_prob(sched, out, t, x, prev, eta=1.0), ref, rtol=1e-5, atol=1e-3
    )
    # Scored at its own sample, the log-prob is the standard-normal density of the noise over std.
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    d = math.prod(SHAPE[1:])
    expected = -0.5 * (noise**2).sum((1, 2, 3)) - d * (torch.log(std) + 0.5 * math.log(2 * math.pi))
    torch.testing.assert_close(dist.log_prob(dist.sample(noise)), expected, rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(dist.noise_of(dist.sample(noise)), noise, atol=1e-4, rtol=0)


@pytest.mark.parametrize("cls", [DDIMScheduler, DDPMScheduler])
def test_per_sample_timesteps_equal_separate_calls(cls):
    sched = cls.from_config(DDIMScheduler(**SD_CONFIG).config)
    sched.set_timesteps(6)
    out, x, prev = _tensors()
    ts = sched.timesteps[[0, 2, 5]]
    mixed = step_log_prob(sched, out, ts, x, prev)
    single = torch.cat(
        [
            step_log_prob(sched, out[i : i + 1], ts[i], x[i : i + 1], prev[i : i + 1])
            for i in range(3)
        ]
    )
    torch.testing.assert_close(mixed, single)
    prev_t = previous_timestep(sched, ts)
    assert prev_t.shape == (3,) and int(prev_t[-1]) < 0


def test_log_prob_is_differentiable_in_the_model_output():
    sched = DDIMScheduler(**SD_CONFIG)
    sched.set_timesteps(4)
    out, x, prev = _tensors()
    out.requires_grad_(True)
    step_log_prob(sched, out, sched.timesteps[1], x, prev).sum().backward()
    assert out.grad is not None and bool(torch.isfinite(out.grad).all())
    assert float(out.grad.abs().sum()) > 0


def test_clear_errors():
    out, x, _ = _tensors()
    ddim = DDIMScheduler(**SD_CONFIG)
    with pytest.raises(ValueError, match="set_timesteps"):
        step_distribution(ddim, out, 999, x)
    ddim.set_timesteps(4)
    with pytest.raises(ValueError, match="eta"):
        step_distribution(ddim, out, ddim.timesteps[0], x, eta=0.0)
    with pytest.raises(ValueError, match="timestep"):
        step_distribution(ddim, out, torch.tensor([1, 2]), x)
    with pytest.raises(ValueError, match="shape"):
        step_distribution(ddim, out[:, :2], ddim.timesteps[0], x)
    euler = EulerDiscreteScheduler(
        **{k: v for k, v in SD_CONFIG.items() if k not in ("clip_sample", "set_alpha_to_one")}
    )
    euler.set_timesteps(4)
    with pytest.raises(ValueError, match="DDIMScheduler"):
        step_distribution(euler, out, euler.timesteps[0], x)
    ddpm = _ddpm()
    ddpm.set_timesteps(4)
    with pytest.raises(ValueError, match="not in the DDPM schedule"):
        step_distribution(ddpm, out, 500, x)


def test_k3_is_a_nonnegative_unbiased_kl_estimate():
    lp = torch.tensor([-3.0, -1.0, 2.0])
    assert torch.equal(k3_kl(lp, lp), torch.zeros(3))
    assert bool((k3_kl(lp, lp.flip(0)) >= 0).all())
    # KL(N(0.5, 1) || N(0, 1)) = 0.125, estimated from samples of the first Gaussian.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, generator=g, dtype=torch.float64) + 0.5
    policy, base = torch.distributions.Normal(0.5, 1.0), torch.distributions.Normal(0.0, 1.0)
    est = k3_kl(policy.log_prob(a), base.log_prob(a)).mean()
    assert abs(float(est) - 0.125) < 0.01


def test_gaussian_log_prob_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        gaussian_log_prob(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2))


def test_noise_log_prob_equals_the_latent_log_prob():
    sched = DDIMScheduler(**SD_CONFIG)
    sched.set_timesteps(5)
    out, x, noise = _tensors(4)
    dist = step_distribution(sched, out, sched.timesteps[2], x)
    torch.testing.assert_close(
        noise_log_prob(noise, dist.std), dist.log_prob(dist.sample(noise)), rtol=1e-5, atol=1e-2
    )
    assert torch.equal(noise_log_prob(noise, torch.zeros(3)), torch.zeros(3))
