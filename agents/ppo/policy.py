"""The diffusion policy of the PPO agent: a trainable copy of the env's UNet as a Gaussian policy.

* :class:`DiffusionActorCritic`: the policy's Gaussian of x_{t-1} given x_t (the env's base
  sampler step with the trainable UNet's prediction), plus an optional critic (:class:`ValueNet`).
* :func:`build_policy_unet`: the trainable copy (LoRA adapters, every weight, the cross-attention
  keys and values, or named modules); :func:`trainable_state` the parameters training changes.

The policy reads the schedule, guidance and conditioning from the env's public
:class:`~diffenvs.sampler.BaseSampler` and computes its UNet output with the same guided forward
as the env (:func:`diffenvs.sampler.guided_model_output`), so at initialisation it *is* the base
sampler, whatever the UNet (classifier-free guidance or an LCM-style ``timestep_cond``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from diffenvs.logprob import gaussian_kl

if TYPE_CHECKING:
    from agents.ppo.config import PPOConfig
    from diffenvs.sampler import BaseSampler


class DiffusionActorCritic(nn.Module):
    """A trainable UNet as a Gaussian policy over x_{t-1}, plus an optional value network.

    Its step is the env's base step with the trainable UNet in place of the frozen one: the same
    guided forward and the same schedule coefficients, both from ``sampler`` (the env's
    :class:`~diffenvs.sampler.BaseSampler`). So at initialisation (a copy of the base UNet, or a
    zero LoRA update) the policy *is* the base sampler: same mean, σ_t and log-probs.
    """

    def __init__(
        self, unet: nn.Module, sampler: BaseSampler, value: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.unet, self.value = unet, value
        # Read-only schedule and conditioning shared with the env: a plain attribute, not
        # parameters or buffers (they never change and need no gradient synchronisation).
        self.sampler = sampler

    def distribution(self, latents: torch.Tensor, k: torch.Tensor, embeds: torch.Tensor) -> Any:
        """The policy's Gaussian of x_{t-1} for x_t = ``latents`` at step indices ``k`` (B,)."""
        # Under mixed precision the UNet runs in half precision; the Gaussian is kept in float32.
        out = self.sampler.model_output(self.unet, latents, k, embeds, upcast=True)
        return self.sampler.distribution(out, latents.float(), k)

    def step_std(self, k: torch.Tensor) -> torch.Tensor:
        """σ_t of the reverse step at step indices ``k`` (the policy's and the base model's)."""
        return self.sampler.sigma[k.cpu()]

    def value_of(
        self, latents: torch.Tensor, k: torch.Tensor, embeds: torch.Tensor
    ) -> torch.Tensor:
        obs = {
            "latent": latents.float(),
            "timestep": self.sampler.timesteps[k].float()[:, None],
            "prompt_embeds": embeds.float(),
        }
        return self.value(obs).float().reshape(-1)

    def forward(
        self,
        latents: torch.Tensor,
        k: torch.Tensor,
        embeds: torch.Tensor,
        next_latents: torch.Tensor,
        base_means: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(log-prob of ``next_latents`` (B,), value (B,) or None, exact KL to the base step (B,)
        or None when ``base_means`` is None): one call, so DDP sees every parameter it uses."""
        dist = self.distribution(latents, k, embeds)
        log_prob = dist.log_prob(next_latents.float())
        value = self.value_of(latents, k, embeds) if self.value is not None else None
        kl = None
        if base_means is not None:
            kl = gaussian_kl(dist.mean.float(), base_means.float(), dist.std.float())
        return log_prob, value, kl


class ValueNet(nn.Module):
    """V(x_t, t, c): the small latent CNN of the SB3/Tianshou adapters and a zero-initialised head."""

    def __init__(self, latent_channels: int, text_width: int) -> None:
        super().__init__()
        from agents.adapters.nets import LatentEncoder

        self.encoder = LatentEncoder(latent_channels, text_width, features_dim=128)
        self.head = nn.Linear(128, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(obs))


def build_policy_unet(base_unet: nn.Module, cfg: PPOConfig) -> nn.Module:
    """A trainable copy of the base UNet: LoRA adapters (peft), every weight, the
    cross-attention keys and values, or the weights of named modules."""
    unet = copy.deepcopy(base_unet)
    unet.requires_grad_(False)
    if cfg.finetune == "lora":
        from peft import LoraConfig

        targets = list(cfg.lora_targets)
        names = [n for n, _ in unet.named_modules()]
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            raise ValueError(
                f"LoRA targets {missing} match no UNet module; attention projections are named "
                "to_q, to_k, to_v, to_out.0."
            )
        unet.add_adapter(
            LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets)
        )
        for name, p in unet.named_parameters():
            p.requires_grad_("lora_" in name)
    elif cfg.finetune == "full":
        unet.requires_grad_(True)
    elif cfg.finetune == "cross_attention":
        # Custom Diffusion's choice: only the keys and values that read the text move, so what a
        # prompt does can change while the image pathway (layout, colours) stays the base model's.
        trained = [
            p
            for name, module in unet.named_modules()
            if name.endswith("attn2")
            for proj in ("to_k", "to_v")
            for p in getattr(module, proj).parameters()
        ]
        if not trained:
            raise ValueError(
                "finetune='cross_attention' found no cross-attention (attn2) modules in the UNet; "
                "use finetune='lora' or 'full' for a UNet without text cross-attention."
            )
        for p in trained:
            p.requires_grad_(True)
    elif cfg.finetune == "modules":
        names = [n for n, _ in unet.named_modules() if n]
        for wanted in cfg.train_modules:
            matched = [n for n in names if n == wanted or n.startswith(wanted + ".")]
            if not matched:
                tops = sorted({n.split(".")[0] for n in names})
                raise ValueError(
                    f"train_modules entry {wanted!r} names no UNet module; use a module name or "
                    f"prefix such as {tops} (or 'up_blocks.2')."
                )
            unet.get_submodule(wanted).requires_grad_(True)
    else:
        raise ValueError(
            "finetune must be 'lora', 'full', 'cross_attention' or 'modules', got "
            f"{cfg.finetune!r}."
        )
    return unet


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that training changes (LoRA weights or the whole UNet, and the critic)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
