"""Outcome heads: reward, termination and success predicted from a frame's latent.

A small convolutional network on the autoencoder latent of one frame `(C, h, w)` with three outputs: the reward
of the transition that produced the frame (regression; e.g. a goal coverage in [0, 1]), and logits for
"the episode terminated with this frame" and "the task is solved in this frame". Trained on real frames
(``worldsim train-heads``, :mod:`worldsim.training.train_heads`) and applied to imagined ones, so an imagined
rollout gets rewards the way a real env gives them (as DreamerV3 and DIAMOND predict rewards and terminations,
here from the frame alone, which is enough when reward is a function of the scene).

Saved and loaded with diffusers' ``ModelMixin`` (safetensors) under ``<pipeline>/heads``.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from worldsim.utils.shapes import size_pair


class OutcomeHeads(ModelMixin, ConfigMixin):
    """Reward / termination / success heads on one frame's latent.

    Args:
        in_channels: latent channels C.
        sample_size: the latent grid, an int h = w or a pair [h, w] (each even).
        hidden_dim: convolution width.
        reward_min, reward_max: the reward range; predictions are clipped to it.
        embodiment: the embodiment whose frames the heads were trained on (None: any); an env serving another
            embodiment of a joint model does not use them.
        termination_trained, success_trained: whether the training data had any positive example of the label;
            a head that never saw one is not reported by :meth:`predict` (its output would be a constant "never",
            not a prediction).
        value_discount: when set (gamma in (0, 1)), a fourth output predicts the state value under the data's
            policy: the normalised discounted future reward ``(1 - gamma) * sum_i gamma^i r_{t+i}`` (in reward
            units), the terminal-value estimate model-based planners (TD-MPC, MuZero) put at the end of an
            imagined rollout. None (heads saved before it existed): no value output.

    Shapes:
        forward: latents `(B, C, h, w)` float -> dict of `(B,)` float32: ``reward`` (raw regression),
        ``termination_logit``, ``success_logit`` (and ``value`` with ``value_discount``).

    Raises:
        ValueError: a ``sample_size`` side odd, ``reward_min >= reward_max`` or ``value_discount`` outside (0, 1).
    """

    @register_to_config
    def __init__(self, in_channels: int = 8, sample_size: int | tuple[int, int] = 8, hidden_dim: int = 64, reward_min: float = 0.0,
                 reward_max: float = 1.0, termination_trained: bool = True, success_trained: bool = True,
                 embodiment: str | None = None, value_discount: float | None = None):
        super().__init__()
        if value_discount is not None and not 0.0 < value_discount < 1.0:
            raise ValueError(f"value_discount must be in (0, 1) or None, got {value_discount}")
        height, width = size_pair(sample_size, "sample_size")
        if height % 2 or width % 2:
            raise ValueError(f"sample_size sides must be even, got {sample_size}")
        if reward_min >= reward_max:
            raise ValueError(f"reward_min {reward_min} must be below reward_max {reward_max}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden_dim, hidden_dim, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(hidden_dim * (height // 2) * (width // 2), 128), nn.SiLU(), nn.Linear(128, 3 if value_discount is None else 4))

    def forward(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        if latents.ndim != 4 or latents.shape[1] != self.config.in_channels:
            raise ValueError(f"latents must be (B, {self.config.in_channels}, h, w), got {tuple(latents.shape)}")
        out = self.features(latents).float()
        named = {"reward": out[:, 0], "termination_logit": out[:, 1], "success_logit": out[:, 2]}
        if self.config.value_discount is not None:
            named["value"] = out[:, 3]
        return named

    @torch.no_grad()
    def predict(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outcomes in their units: ``reward`` clipped to the range, ``termination_probability`` and
        ``success_probability`` in [0, 1] (only for heads trained with positive examples), ``value`` clipped to the
        reward range (only with ``value_discount``); each `(B,)` float32."""
        out = self(latents)
        predicted = {"reward": out["reward"].clamp(self.config.reward_min, self.config.reward_max)}
        if self.config.termination_trained:
            predicted["termination_probability"] = out["termination_logit"].sigmoid()
        if self.config.success_trained:
            predicted["success_probability"] = out["success_logit"].sigmoid()
        if "value" in out:
            predicted["value"] = out["value"].clamp(self.config.reward_min, self.config.reward_max)
        return predicted
