"""worldsim: a learned simulator.

An action-conditioned autoregressive video diffusion model trained on action-annotated video, served as a
Gymnasium environment (``worldsim/WorldModel-v0``).
"""

__version__ = "0.1.0"

from gymnasium.envs.registration import register as _register

_register(id="worldsim/WorldModel-v0", entry_point="worldsim.envs:WorldModelEnv",
          vector_entry_point="worldsim.envs:WorldModelVectorEnv", max_episode_steps=300)
