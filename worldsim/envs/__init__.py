"""Gymnasium environments backed by a trained world model."""

from worldsim.envs.vector_env import WorldModelVectorEnv
from worldsim.envs.world_model_env import WorldModelEnv

__all__ = ["WorldModelEnv", "WorldModelVectorEnv"]
