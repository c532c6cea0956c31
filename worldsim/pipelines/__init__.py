"""The autoregressive denoising loop and the saved-model bundle (:class:`WorldModelPipeline`)."""

from worldsim.pipelines.world_model import RolloutState, WorldModelPipeline

__all__ = ["RolloutState", "WorldModelPipeline"]
