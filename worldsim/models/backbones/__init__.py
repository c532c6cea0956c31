"""Pretrained video transformers adapted into worldsim world models.

Each adapter wraps a diffusers video transformer, runs its weights frame-causally with worldsim's action and task
conditioning (:class:`~worldsim.models.world_model.FrameCausalVideoModel`), and starts, before fine-tuning, exactly
as the pretrained backbone. ``BACKBONES`` names them for configs (``transformer.backbone``).
"""

from worldsim.models.backbones.wan import WanWorldModel, check_wan_config

#: ``transformer.backbone`` name -> the adapter class
BACKBONES = {"wan": WanWorldModel}

__all__ = ["BACKBONES", "WanWorldModel", "check_wan_config"]
