"""One PromptAppend-v0 episode by hand, with action masks, the reward and the cache.

python examples/prompt_append_episode.py

Expected result (measured): the seed prompt "three large pink triangles in the middle of a brick
wall, pastel"; appending "outlined" gives reward 0.000 (the episode is not over), appending
"dotted" ends it with a terminal reward of about 0.88 (0.884 measured); the masked-out words
grow from [2, 5, 9] to [1, 2, 5, 9] (each word already in the prompt); cache hit rate 0.0.
Writes prompt_append_episode.png in the current folder. About 12 s on a busy 2-core CPU.
"""

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

import diffenvs  # noqa: F401  (registers the environments)

torch.set_num_threads(1)
env = gym.make(
    "PromptAppend-v0", tasks="world:test", task=0, num_inference_steps=10, render_mode="rgb_array"
)
obs, info = env.reset(seed=0)
u = env.unwrapped
print("seed prompt:", info["prompt"], "| vocabulary:", u.vocabulary)
print("ground truth:", u.task.ground_truth)
for word in ("outlined", "dotted"):
    obs, reward, terminated, truncated, info = env.step(u.vocabulary.index(word))
    print(f"+{word!r}: reward {reward:.3f}, mask {np.flatnonzero(~u.action_masks()).tolist()}")
print("final prompt:", info["prompt"], "| cache hit rate", round(info["cache_hit_rate"], 2))
Image.fromarray(env.render()).resize((260, 128), Image.NEAREST).save("prompt_append_episode.png")
print("wrote prompt_append_episode.png (current prompt's image | target)")
