"""``SamplerSettings``: how a pipeline imagines a frame, resolved once from the model's defaults and a caller's
overrides, then carried whole by the envs, ranking, steering and evaluation (as DIAMOND's env takes one sampler
config) instead of five loose arguments threaded through every layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

TIMESTEP_SPACINGS = ("linspace", "trailing")
DECODERS = ("full", "light")


@dataclass(frozen=True)
class SamplerSettings:
    """One frame's denoising loop and decoder.

    Attributes:
        num_inference_steps: Euler steps per frame, >= 1.
        timestep_spacing: ``"linspace"`` (diffusers' flow-matching default) or ``"trailing"`` (equal steps from pure
            noise to the clean frame; Lin et al. 2024), see :meth:`~worldsim.pipelines.WorldModelPipeline.set_timesteps`.
        context_noise: sigma in [0, 1) of history frames (noise-augmented history).
        action_guidance_scale: classifier-free guidance on the action (1.0: off).
        decoder: ``"full"`` (the autoencoder's decoder) or ``"light"`` (the model's light decoder).

    Build one with :meth:`resolve` (or :meth:`~worldsim.pipelines.WorldModelPipeline.sampler_settings`), which fills
    what is not given from the model's ``worldsim.json`` and checks everything once.

    >>> sampler = SamplerSettings.resolve(pipe, num_inference_steps=3)            # doctest: +SKIP
    >>> env = gym.make("worldsim/WorldModel-v0", model=pipe, sampler=sampler)      # doctest: +SKIP
    """

    num_inference_steps: int
    timestep_spacing: str
    context_noise: float
    action_guidance_scale: float
    decoder: str

    def __post_init__(self):
        if isinstance(self.num_inference_steps, bool) or int(self.num_inference_steps) != self.num_inference_steps \
                or self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {self.num_inference_steps!r}")
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be 'linspace' or 'trailing', got {self.timestep_spacing!r}")
        if not 0.0 <= float(self.context_noise) < 1.0:
            raise ValueError(f"context_noise must be in [0, 1), got {self.context_noise!r}")
        if float(self.action_guidance_scale) <= 0.0:
            raise ValueError(f"action_guidance_scale must be > 0, got {self.action_guidance_scale!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be 'full' or 'light', got {self.decoder!r}")

    @classmethod
    def resolve(cls, pipeline, num_inference_steps: int | None = None, timestep_spacing: str | None = None,
                context_noise: float | None = None, action_guidance_scale: float | None = None,
                decoder: str | None = None) -> "SamplerSettings":
        """The settings a caller asks for, the model's defaults filling the rest.

        Args:
            pipeline: the :class:`~worldsim.pipelines.WorldModelPipeline` (its ``worldsim.json`` holds the defaults:
                ``num_inference_steps`` (10 when absent), ``timestep_spacing`` (``"linspace"``), ``context_noise``
                (0), ``action_guidance_scale`` (1) and the decoder currently in use, which is the model's
                ``decoder`` unless :meth:`~worldsim.pipelines.WorldModelPipeline.set_decoder` changed it).
            num_inference_steps, timestep_spacing, context_noise, action_guidance_scale, decoder: None takes the
                model's.

        Raises:
            ValueError: a value outside its range (see the attributes), or ``"light"`` for a model without a light
                decoder.
        """
        metadata = pipeline.metadata
        settings = cls(
            num_inference_steps=(metadata.get("num_inference_steps", 10) if num_inference_steps is None
                                 else num_inference_steps),
            timestep_spacing=timestep_spacing or metadata.get("timestep_spacing", "linspace"),
            context_noise=float(metadata.get("context_noise", 0.0) if context_noise is None else context_noise),
            action_guidance_scale=float(metadata.get("action_guidance_scale", 1.0) if action_guidance_scale is None
                                        else action_guidance_scale),
            decoder=decoder or pipeline.decoder_name)
        if settings.decoder == "light" and pipeline.decoder is None:
            raise ValueError("this model has no light decoder (no decoder/ folder); train one with "
                             "`worldsim train-decoder --model <folder> --dataset <data>` or use decoder='full'")
        return settings

    def replace(self, **changes) -> "SamplerSettings":
        """A copy with some fields changed (checked like a new one)."""
        return SamplerSettings(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    def step_kwargs(self) -> dict:
        """Keyword arguments for :meth:`~worldsim.pipelines.WorldModelPipeline.step` and ``rollout``."""
        return {"num_inference_steps": self.num_inference_steps, "context_noise": self.context_noise,
                "action_guidance_scale": self.action_guidance_scale, "timestep_spacing": self.timestep_spacing}

    def apply(self, pipeline) -> None:
        """Makes ``pipeline`` decode with :attr:`decoder` and sets its scheduler's timesteps (what an env does once
        before its first step)."""
        pipeline.set_decoder(self.decoder)
        pipeline.set_timesteps(self.num_inference_steps, self.timestep_spacing)
