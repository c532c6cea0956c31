"""The autoregressive denoising loop and the saved-model bundle (:class:`WorldModelPipeline`).

:mod:`~worldsim.pipelines.world_model` holds the pipeline and its loop, :mod:`~worldsim.pipelines.loading` the
saved folder (writing it, reading it back, its checks), :mod:`~worldsim.pipelines.embodiments` the action sources a
pipeline can be driven by, and :mod:`~worldsim.pipelines.sampler` the sampler settings.
"""

from worldsim.pipelines.sampler import SamplerSettings
from worldsim.pipelines.world_model import RolloutState, WorldModelPipeline

__all__ = ["RolloutState", "SamplerSettings", "WorldModelPipeline"]
