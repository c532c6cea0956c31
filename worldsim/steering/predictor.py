"""``OutcomePredictor``: imagine the outcome of K candidate action chunks from one real context, in one batch.

The recent real frames and actions are encoded into the KV cache once; the cache is then copied K times and all
K candidates are imagined side by side, one batched step per action of the chunk. Each imagined future is scored
by the model's reward head (the default), or by any user scorer on the imagined frames and a task text (the hook a
VLM judge plugs into). This is the runtime-steering loop of "imagine, score, execute the best" (best-of-N
selection with a learned simulator, as in world-model planning and VLA steering), written for the streaming cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from worldsim.data.frame_cache import resize_frames
from worldsim.pipelines.world_model import RolloutState, WorldModelPipeline


@dataclass
class Prediction:
    """Imagined futures of K candidates.

    Attributes:
        frames: `(K, H, S, S, 3)` uint8 imagined frames (H actions per candidate, one frame each).
        rewards: `(K, H)` float32 predicted reward per frame (NaN when the model has no outcome heads).
        scores: `(K,)` float64 the score each candidate was ranked by (higher is better).
        best: index of the highest score.
    """

    frames: np.ndarray
    rewards: np.ndarray
    scores: np.ndarray
    best: int


class OutcomePredictor:
    """Scores candidate action chunks by imagining them from the current real observation.

    Args:
        model: a pipeline folder or a loaded :class:`WorldModelPipeline` (with outcome heads unless ``scorer``).
        scorer: optional ``scorer(frames (K, H, S, S, 3) uint8, task) -> (K,)`` float, higher is better; replaces
            the reward-head score.
        task: text handed to ``scorer``.
        aggregate: how the heads score a future: ``"value"`` (the value head on the final imagined frame: the
            expected discounted future reward from where the chunk leaves the scene, the default when the heads
            have a value output), ``"max"`` (best reward of any frame, the default otherwise), ``"last"`` (reward of
            the final frame) or ``"mean"``.
        num_inference_steps, context_noise: sampler settings (default: the model's).
        embodiment: which embodiment's actions the candidates are (multi-embodiment models).
        seed: seed of the imagination noise (each call advances it).

    Raises:
        ValueError: unknown ``aggregate``, ``"value"`` for heads without a value output, or no outcome heads and no
            scorer.
    """

    def __init__(self, model: str | Path | WorldModelPipeline, scorer: Callable | None = None,
                 task: str | None = None, aggregate: str | None = None, num_inference_steps: int | None = None,
                 context_noise: float | None = None, embodiment: str | None = None, seed: int = 0):
        self.pipeline = model if isinstance(model, WorldModelPipeline) else WorldModelPipeline.from_pretrained(model)
        self.embodiment = self.pipeline.embodiment(embodiment).name
        heads = self.pipeline.heads_for(self.embodiment)
        if scorer is None and heads is None:
            raise ValueError(f"the model has no outcome heads for {self.embodiment!r}; pass a scorer or train heads "
                             f"(worldsim train-heads)")
        has_value = heads is not None and heads.config.value_discount is not None
        if aggregate is None:
            aggregate = "value" if has_value else "max"
        if aggregate not in ("value", "max", "last", "mean"):
            raise ValueError(f"aggregate must be 'value', 'max', 'last' or 'mean', got {aggregate!r}")
        if aggregate == "value" and scorer is None and not has_value:
            raise ValueError("aggregate='value' needs heads with a value output (worldsim train-heads "
                             "--value-discount)")
        if scorer is not None and not callable(scorer):
            raise ValueError(f"scorer must be callable, got {type(scorer).__name__}")
        self.scorer, self.task, self.aggregate = scorer, task, aggregate
        self.num_inference_steps, self.context_noise = num_inference_steps, context_noise
        self.generator = torch.Generator().manual_seed(seed)
        self.last_prediction: Prediction | None = None  # the most recent decision's futures and scores

    def encode(self, frames: np.ndarray, actions: np.ndarray) -> RolloutState:
        """Encodes the recent real frames `(n, H', W', 3)` uint8 and the `(n - 1, A)` actions between them (once)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (n, H, W, 3), got {frames.dtype} {frames.shape}")
        frames = resize_frames(frames, self.pipeline.image_size)
        return self.pipeline.encode_context(frames[None], np.asarray(actions, dtype=np.float32)[None],
                                            self.context_noise, self.generator, embodiment=self.embodiment)

    @torch.no_grad()
    def predict(self, frames: np.ndarray, actions: np.ndarray, candidates: np.ndarray) -> Prediction:
        """Imagines and scores every candidate chunk.

        Args:
            frames: `(n, H', W', 3)` uint8 recent real frames, oldest first (resized to the model's size).
            actions: `(n - 1, A)` float32 env-unit actions between them.
            candidates: `(K, H, A)` float32 env-unit action chunks to compare.

        Returns:
            :class:`Prediction`.

        Raises:
            ValueError: malformed frames, actions or candidates (the message names the shape expected), or a
                scorer output that is not `(K,)` finite numbers.
        """
        candidates = np.asarray(candidates, dtype=np.float32)
        action_dim = self.pipeline.embodiment(self.embodiment).action_dim
        if candidates.ndim != 3 or candidates.shape[-1] != action_dim or 0 in candidates.shape[:2]:
            raise ValueError(f"candidates must be (K, H, {action_dim}) with K, H >= 1, got {candidates.shape}")
        if not np.all(np.isfinite(candidates)):
            raise ValueError("candidates contain NaN or inf")
        shared = self.encode(frames, actions)  # the context is encoded once, not K times
        count, horizon = candidates.shape[:2]
        copies = torch.zeros(count, dtype=torch.long)
        state = RolloutState(shared.latents[copies], shared.action[copies], shared.frames[copies], shared.num_steps,
                             shared.cache.reorder(copies.to(shared.cache.keys.device)), embodiment=self.embodiment)
        imagined = []
        for step in range(horizon):
            state = self.pipeline.step(state, candidates[:, step], self.num_inference_steps, self.context_noise,
                                       self.generator)
            imagined.append(state.frames.cpu().numpy())
        futures = np.stack(imagined, axis=1)  # (K, H, S, S, 3)
        rewards = np.full((count, horizon), np.nan, dtype=np.float32)
        values = None
        if self.pipeline.heads_for(self.embodiment) is not None:
            outcomes = self.pipeline.outcomes(futures.reshape(-1, *futures.shape[2:]), self.embodiment)
            rewards = outcomes["reward"].reshape(count, horizon)
            if "value" in outcomes:
                values = outcomes["value"].reshape(count, horizon)
        if self.scorer is not None:
            scores = np.asarray(self.scorer(futures, self.task), dtype=np.float64)
            if scores.shape != (count,) or not np.all(np.isfinite(scores)):
                raise ValueError(f"scorer returned {scores.shape} values; expected ({count},) finite numbers")
        elif self.aggregate == "value":
            scores = values[:, -1].astype(np.float64)
        else:
            reduce = {"max": np.max, "last": lambda r, axis: r[:, -1], "mean": np.mean}[self.aggregate]
            scores = reduce(rewards.astype(np.float64), axis=1)
        self.last_prediction = Prediction(futures, rewards, scores, int(np.argmax(scores)))
        return self.last_prediction
