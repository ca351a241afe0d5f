"""Reference tasks with a known optimum: exact diffusion models of Gaussian mixtures.

* :mod:`~diffenvs.reference.mixture`: :class:`GaussianMixture` (density, exact samples, the exact
  posterior mean / score of any Gaussian noising path, the closed-form tilt by a quadratic
  reward), :class:`QuadraticReward`, :func:`optimum_point` (E_{p*}[r], KL(p*||p)).
* :mod:`~diffenvs.reference.tasks`: named mixtures and reward specs, :class:`ReferenceTask`.
* :mod:`~diffenvs.reference.denoiser`: :class:`MixtureDenoiser`, the exact ε / velocity shaped
  like a diffusers UNet, with a zero-initialised trainable residual.
* :mod:`~diffenvs.reference.sampler`: the DDIM/DDPM :class:`~diffenvs.sampler.BaseSampler` and the
  Flow-GRPO :class:`ReferenceFlowSampler` built on it.
* :mod:`~diffenvs.reference.metrics`: sliced W2, kNN KL, exact path KL, calibration.

The envs are ``ReferenceGMM2D-v0`` and ``ReferenceGMMND-v0`` (docs/envs/reference.md).
"""

from diffenvs.reference.denoiser import MixtureDenoiser
from diffenvs.reference.metrics import (
    calibration_report,
    distance_report,
    knn_kl_divergence,
    sample_policy,
    sliced_wasserstein,
)
from diffenvs.reference.mixture import GaussianMixture, OptimumPoint, QuadraticReward, optimum_point
from diffenvs.reference.sampler import ReferenceFlowSampler, build_reference_sampler
from diffenvs.reference.tasks import ReferenceTask, make_mixture, make_quadratic_reward

__all__ = [
    "GaussianMixture",
    "MixtureDenoiser",
    "OptimumPoint",
    "QuadraticReward",
    "ReferenceFlowSampler",
    "ReferenceTask",
    "build_reference_sampler",
    "calibration_report",
    "distance_report",
    "knn_kl_divergence",
    "make_mixture",
    "make_quadratic_reward",
    "optimum_point",
    "sample_policy",
    "sliced_wasserstein",
]
