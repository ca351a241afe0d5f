"""A diffusion policy in latent mode with Kristiansen & Vågen's per-step KL penalty (eq. 5.3, k3 estimator).

The "policy" here is the world model itself with a stronger classifier-free guidance (4.5 instead
of the env's 4): it samples x_{t-1} from its own Gaussian step, reports the action's log-probability
(computed with diffenvs.logprob, as a PPO agent would) and the env charges -beta * k3 per step.

python examples/denoise_kl_penalty.py

Expected result (measured, seeded, so it repeats): prompt 'one large blue cross in the middle of
a desert, outlined, pastel', ten per-step k3 values [0.2, 0.01, 1.52, 0.97, 1.5, 1.06, 7.4, 2.24,
536.61, 13.62], terminal reward 0.477, KL penalty -5.651 and return -5.174. The second-to-last
step holds almost all of the KL, and at beta = 0.01 the penalty outweighs the colourfulness
reward. About 11 s on a busy 2-core CPU.
"""

import gymnasium as gym
import numpy as np
import torch

import diffenvs  # noqa: F401  (registers the environments)
from diffenvs.logprob import step_distribution
from diffenvs.models import shared_pipeline

torch.set_num_threads(1)
STEPS, BETA, POLICY_GUIDANCE = 10, 0.01, 4.5
env = gym.make(
    "DiffusionDenoise-v0",
    num_steps=STEPS,
    action_mode="latent",
    kl_coef=BETA,
    reward="colourfulness",
)
pipe = shared_pipeline("world")  # the process-wide copy: the very object the env steps with
scheduler = env.unwrapped.core.scheduler  # DDIM, eta = 1, STEPS timesteps
_, negative = pipe.encode_prompt("", "cpu", 1, True)
generator = torch.Generator().manual_seed(0)

obs, info = env.reset(seed=0)
total, kls, done = 0.0, [], False
with torch.no_grad():
    while not done:
        x = torch.from_numpy(obs["latent"])[None]
        t = torch.tensor(int(obs["timestep"][0]))
        cond = torch.from_numpy(obs["prompt_embeds"])[None]
        out = pipe.unet(
            torch.cat([x, x]), t, encoder_hidden_states=torch.cat([negative, cond])
        ).sample
        uncond, text = out.chunk(2)
        dist = step_distribution(
            scheduler, uncond + POLICY_GUIDANCE * (text - uncond), t, x, eta=1.0
        )
        action = dist.sample(torch.randn(x.shape, generator=generator))
        env.unwrapped.set_policy_log_prob(float(dist.log_prob(action)[0]))
        obs, reward, done, _, info = env.step(action[0].numpy())
        kls.append(info["kl"])
        total += reward
print(f"prompt: {info['prompt']!r}")
print(f"per-step k3 KL to the base: {np.round(kls, 2).tolist()}")
print(
    f"terminal reward {info['terminal_reward']:.3f}, KL penalty {-BETA * sum(kls):.3f}, return {total:.3f}"
)
