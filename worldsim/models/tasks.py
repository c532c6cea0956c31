"""Task conditioning: what a multi-task world model knows of the instruction behind an episode.

Every LeRobot episode carries a task text (``meta/tasks.parquet``; "push the puck to the goal"). A model trained on
several tasks is told which one it imagines through one vector per task, added to every frame's conditioning (the
vector that drives adaLN, beside the timestep and action embeddings), as class labels condition DiT (Peebles & Xie
2023) and text conditions Astra's and Ctrl-World's backbones. Two ways to get the vector:

* a learned table (the default): one row per task text of the training data;
* a text encoder the user supplies (:class:`TaskTextEncoder`: any object with ``embedding_dim`` and
  ``encode(texts) -> (N, E)``, say a sentence-transformers model loaded from local weights): the encoder's vectors of
  the training tasks are computed once, stored in the model, and mapped to the model width by a learned linear layer;
  a new task text needs the encoder again (:meth:`TaskEmbedder.set_text_embedding`).

The last index is the null task (no task, or one the model does not know); training drops the task with a small
probability so that it means "some task".
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@runtime_checkable
class TaskTextEncoder(Protocol):
    """What a text encoder plug-in provides.

    Attributes:
        embedding_dim: E, the size of one text's vector.

    Methods:
        encode(texts): a list of N strings -> `np.ndarray` `(N, E)` float32.
    """

    embedding_dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def encode_tasks(encoder: TaskTextEncoder, tasks: list[str]) -> np.ndarray:
    """The encoder's vectors of ``tasks``, checked.

    Returns:
        `(len(tasks), E)` float32.

    Raises:
        TypeError: ``encoder`` lacks ``embedding_dim`` or ``encode``.
        ValueError: the encoder returned another shape, or values that are not finite.
    """
    if not isinstance(encoder, TaskTextEncoder):
        raise TypeError(f"a task text encoder needs an embedding_dim and encode(texts), got {type(encoder).__name__}")
    vectors = np.asarray(encoder.encode(list(tasks)), dtype=np.float32)
    if vectors.shape != (len(tasks), int(encoder.embedding_dim)):
        raise ValueError(f"the task text encoder returned shape {vectors.shape}, expected "
                         f"({len(tasks)}, {encoder.embedding_dim})")
    if not np.isfinite(vectors).all():
        raise ValueError("the task text encoder returned values that are not finite")
    return vectors


class TaskEmbedder(nn.Module):
    """Task index -> conditioning vector.

    Args:
        tasks: the known task texts, T of them; index T is the null task.
        dim: D, the model width.
        text_dim: None for a learned table; E for text-encoder vectors (stored in ``text_embeddings``, zero until
            :meth:`set_text_embedding` fills them) projected by a learned linear layer.

    Shapes:
        forward: `(B,)` long in ``[0, T]`` -> `(B, D)` float.

    Raises:
        ValueError: no tasks, duplicate task texts, or ``text_dim < 1``.
    """

    def __init__(self, tasks: list[str], dim: int, text_dim: int | None = None):
        super().__init__()
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct task texts, got {tasks!r}")
        if text_dim is not None and text_dim < 1:
            raise ValueError(f"task_embedding_dim must be >= 1 or None, got {text_dim}")
        self.num_tasks = len(tasks)
        if text_dim is None:
            self.table = nn.Embedding(self.num_tasks + 1, dim)
            nn.init.normal_(self.table.weight, std=0.02)
            self.text_embeddings, self.projection = None, None
        else:
            self.table = None
            # stored with the weights (a model trained on text vectors needs no encoder for its own tasks), not trained
            self.text_embeddings = nn.Parameter(torch.zeros(self.num_tasks + 1, text_dim), requires_grad=False)
            self.projection = nn.Linear(text_dim, dim)
            self.null = nn.Parameter(torch.zeros(dim))

    @property
    def null_index(self) -> int:
        """The index of the null task (T)."""
        return self.num_tasks

    def set_text_embedding(self, index: int, vector: np.ndarray | torch.Tensor) -> None:
        """Stores the text encoder's vector of task ``index`` (text-encoder models only).

        Raises:
            ValueError: a table model, an index outside ``[0, T)``, or a vector of another size.
        """
        if self.text_embeddings is None:
            raise ValueError("this model embeds tasks with a learned table, not text vectors")
        if not 0 <= index < self.num_tasks:
            raise ValueError(f"task index {index} is outside [0, {self.num_tasks})")
        vector = torch.as_tensor(np.asarray(vector, dtype=np.float32))
        if vector.shape != self.text_embeddings.shape[1:]:
            raise ValueError(f"task vector has shape {tuple(vector.shape)}, expected {tuple(self.text_embeddings.shape[1:])}")
        with torch.no_grad():
            self.text_embeddings[index] = vector.to(self.text_embeddings)

    def forward(self, task: torch.Tensor) -> torch.Tensor:
        if task.dtype != torch.long or task.ndim != 1:
            raise ValueError(f"task must be (B,) long indices, got {task.dtype} {tuple(task.shape)}")
        if len(task) and (int(task.min()) < 0 or int(task.max()) > self.num_tasks):
            raise ValueError(f"task indices must be in [0, {self.num_tasks}], got {task.tolist()}")
        if self.table is not None:
            return self.table(task)
        projected = self.projection(self.text_embeddings[task].to(self.projection.weight.dtype))
        return torch.where((task == self.num_tasks)[:, None], self.null.to(projected.dtype), projected)


def load_task_encoder(spec: str) -> TaskTextEncoder:
    """The text encoder a ``"module:object"`` string names (an instance, or a class / factory called with no
    arguments), e.g. ``"my_encoders:MiniLM"`` whose constructor loads local weights.

    Raises:
        ValueError: not ``module:object``, no such attribute, or not a :class:`TaskTextEncoder`.
        ImportError: the module cannot be imported.
    """
    from worldsim.utils.imports import load_object

    return load_object(spec, "task text encoder", TaskTextEncoder)
