"""``SteeredPolicy``: a stochastic chunk policy made better by imagining its candidates before acting."""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import numpy as np

from worldsim.steering.predictor import OutcomePredictor


class SteeredPolicy:
    """Best-of-K steering of a stochastic base policy with an :class:`OutcomePredictor`.

    Whenever its current chunk is used up, the policy draws ``num_candidates`` chunks from ``base`` for the current
    observation, imagines each from the recent real frames (and states) and actions, and executes the best-scoring
    one open-loop. Until ``context`` real frames have been seen it executes the base policy's first chunk unsteered.

    Args:
        base: a stochastic chunk policy: ``base(observation) -> (H, A)`` float, a different chunk per call (e.g. a
            diffusion policy), or an object with ``sample_chunks(observation, K) -> (K, H, A)``. The observation is
            whatever :meth:`act` is given: a frame `(H', W', 3)` uint8, or a Dict of camera views and
            ``observation.state`` for a model that observes them.
        predictor: the outcome predictor (model, scorer, task).
        num_candidates: K >= 1 (1 is the base policy itself, imagined but not steered).
        context: real frames handed to the predictor (the model's window works best).

    ``reset()`` then ``act(observation, frame=None, state=None) -> action (A,)``; ``frames``, ``states`` and
    ``actions`` hold the recent real context (deques of at most ``context``, ``context`` and ``context - 1``
    entries; a caller that plays context steps itself may append to them); ``last_decision`` holds why the last
    chunk was chosen: ``{"scores": (K,), "best": int, "step": int, "candidates": (K, H, A) float32}``.

    Raises:
        ValueError: ``num_candidates < 1`` or ``context < 1``; in ``act``: a base policy whose chunks have
            inconsistent shapes.
    """

    def __init__(self, base: Callable, predictor: OutcomePredictor, num_candidates: int = 8, context: int = 4):
        if num_candidates < 1 or context < 1:
            raise ValueError(f"need num_candidates >= 1 and context >= 1, got {num_candidates} and {context}")
        self.base, self.predictor = base, predictor
        self.num_candidates, self.context = int(num_candidates), int(context)
        self.reset()

    def reset(self) -> None:
        """Forgets the context, the queued chunk and the last decision (a new episode)."""
        self.frames: deque = deque(maxlen=self.context)
        # each context frame's observation.state `(S,)` float32, or None (the predictor then gets no states)
        self.states: deque = deque(maxlen=self.context)
        # the real actions between the context frames: before act(t) chooses, a_{t-context+1} .. a_{t-1}
        self.actions: deque = deque(maxlen=self.context - 1)
        self.queue: deque = deque()
        self.steps = 0
        self.last_decision: dict | None = None

    def _sample(self, observation: Any) -> np.ndarray:
        if hasattr(self.base, "sample_chunks"):
            chunks = np.asarray(self.base.sample_chunks(observation, self.num_candidates), dtype=np.float32)
        else:
            chunks = [np.asarray(self.base(observation), dtype=np.float32) for _ in range(self.num_candidates)]
            if len({chunk.shape for chunk in chunks}) != 1:
                raise ValueError(f"base policy chunks differ in shape: {sorted({c.shape for c in chunks})}")
            chunks = np.stack(chunks)
        if chunks.ndim != 3 or chunks.shape[0] != self.num_candidates or chunks.shape[1] == 0:
            raise ValueError(f"candidate chunks must be ({self.num_candidates}, H >= 1, A), got {chunks.shape}")
        return chunks

    def _context_states(self) -> np.ndarray | None:
        """The context frames' states `(context, S)` float32, or None when any is missing."""
        if len(self.states) != len(self.frames) or any(state is None for state in self.states):
            return None
        return np.stack([np.asarray(state, dtype=np.float32) for state in self.states])

    def act(self, observation: Any, frame: np.ndarray | None = None, state: np.ndarray | None = None) -> np.ndarray:
        """The next action, steering a new chunk when the current one is used up.

        Args:
            observation: what the base policy sees (a frame, or one env's Dict observation).
            frame: the model's frame `(Hf, Wf, 3)` uint8 of this moment (camera views side by side), appended to the
                predictor's context; None: ``observation`` itself (a frame-only model).
            state: this moment's real ``observation.state`` `(S,)` float32 for a model with a state predictor (the
                last context state seeds the predicted states), or None.

        Returns:
            The action `(A,)` float32 (flat, env units).
        """
        self.frames.append(np.asarray(observation if frame is None else frame))
        self.states.append(None if state is None else np.asarray(state, dtype=np.float32))
        if not self.queue:
            candidates = self._sample(observation)
            best = 0
            if len(self.frames) == self.context and len(self.actions) == self.context - 1:
                between = np.asarray(self.actions, dtype=np.float32).reshape(self.context - 1, candidates.shape[-1])
                prediction = self.predictor.predict(np.stack(self.frames), between, candidates,
                                                    states=self._context_states())
                best = prediction.best
                self.last_decision = {"scores": prediction.scores, "best": best, "step": self.steps,
                                      "candidates": candidates}
            self.queue.extend(candidates[best])
        action = self.queue.popleft()
        self.actions.append(action)
        self.steps += 1
        return action
