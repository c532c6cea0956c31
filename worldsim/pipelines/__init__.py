"""The autoregressive denoising loop and the saved-model bundle (:class:`WorldModelPipeline`)."""

from worldsim.pipelines.sampler import SamplerSettings
from worldsim.pipelines.world_model import RolloutState, WorldModelPipeline

__all__ = ["RolloutState", "SamplerSettings", "WorldModelPipeline"]
