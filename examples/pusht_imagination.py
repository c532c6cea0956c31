"""Imagine a real PushT episode with the world-model env, step by step, and save real | imagined as a GIF.

Run:  .venv/bin/python examples/pusht_imagination.py
"""

import gymnasium as gym
import numpy as np

import worldsim  # noqa: F401  (registers worldsim/WorldModel-v0)
from worldsim.data.collect import make_recording_env, record_episode
from worldsim.data.frame_cache import resize_frames
from worldsim.data.policies import make_policy
from worldsim.utils.video import write_video

# 1. a real episode from gym-pusht (96 x 96 pixels), driven by the scripted pusher
real_env = make_recording_env("gym_pusht/PushT-v0")
episode = record_episode(real_env, make_policy("pusht-scripted", real_env.action_space, noise_std=10.0), seed=123,
                         max_steps=40)
real_frames = resize_frames(episode.frames, 64)

# 2. the world model, started from the first 4 real frames and the 3 actions between them
env = gym.make("worldsim/WorldModel-v0", model="checkpoints/pusht", render_mode="rgb_array")
observation, info = env.reset(seed=0, options={"context": {"observation.image": episode.frames[:4],
                                                           "action": episode.action[:3]}})

# 3. replay the real actions in imagination
imagined = []
for action in episode.action[3:-1]:
    observation, reward, terminated, truncated, info = env.step(action)
    imagined.append(observation)

video = np.concatenate([real_frames[4:4 + len(imagined)], np.stack(imagined)], axis=2)
print("wrote", write_video("pusht_imagination.gif", video, fps=10))
