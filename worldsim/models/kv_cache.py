"""Key/value cache for the frame-causal world model: history frames are encoded once and reused.

Streaming generation (after CausVid / Self-Forcing style autoregressive video diffusion and StreamingLLM's
attention sinks): every finished frame is run through the transformer once, at the history noise level
``context_noise``, and its per-layer keys and values are kept. A new frame then costs attention over the cache,
not a recomputation of the history.

Memory is bounded: the cache keeps the first ``sink_size`` frames it ever saw (attention sinks) plus the most
recent ``local_attn_size - 1`` frames (the frame being generated is the last of the local window). Keys are
stored after QK-norm but *before* the rotary embedding; rotary angles are applied at attention time with positions
counted along the cache slots (sinks first, then the recent frames, then the new frame), so temporal positions
stay inside the range seen in training however long the rollout runs.
"""

from __future__ import annotations

import torch


class FrameKVCache:
    """Per-layer keys and values of finished frames, bounded to ``sink_size + local_attn_size - 1`` frames.

    Args:
        num_layers: transformer blocks.
        batch_size: B, rollouts sharing the cache.
        num_heads, head_dim: attention geometry of each block.
        tokens_per_frame: N, latent patches per frame.
        local_attn_size: frames of the local attention window, the frame being generated included (>= 2).
        sink_size: first frames kept for ever (>= 0).
        dtype, device: storage of keys and values.

    Storage is preallocated: ``keys`` and ``values`` are `(num_layers, B, heads, capacity * N, head_dim)` with
    ``capacity = sink_size + local_attn_size - 1`` frames, so memory does not grow with the rollout.

    All rows share the slot layout (slot i sits ``num_frames - i`` frames before the next new frame, which is what
    the rotary positions encode). ``valid`` `(B, capacity)` bool marks the slots a row really holds: a row spliced
    in with a shorter history (:meth:`splice`, e.g. one sub-env of a vector env restarting) has its frames
    right-aligned and its leading slots masked out of attention (:meth:`attention_mask`).

    Raises:
        ValueError: ``local_attn_size < 2`` or ``sink_size < 0``.
    """

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, head_dim: int, tokens_per_frame: int,
                 local_attn_size: int, sink_size: int = 0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        if local_attn_size < 2:
            raise ValueError(f"local_attn_size must be >= 2 (history + the new frame), got {local_attn_size}")
        if sink_size < 0:
            raise ValueError(f"sink_size must be >= 0, got {sink_size}")
        self.local_attn_size, self.sink_size = int(local_attn_size), int(sink_size)
        self.tokens_per_frame = int(tokens_per_frame)
        self.capacity = self.sink_size + self.local_attn_size - 1
        shape = (num_layers, batch_size, num_heads, self.capacity * self.tokens_per_frame, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.ones(batch_size, self.capacity, dtype=torch.bool, device=device)
        self.num_frames = 0  # frames held now
        self.frames_seen = 0  # frames ever appended (plus one per splice: a version number for stale states)
        self._rotated: dict[int, torch.Tensor] = {}  # per layer: rotated keys of the current content

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of layer ``index`` held now: two `(B, heads, num_frames * N, head_dim)` views."""
        end = self.num_frames * self.tokens_per_frame
        return self.keys[index, :, :, :end], self.values[index, :, :, :end]

    def rotated_layer(self, index: int, rotate) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s keys passed through ``rotate`` (memoised until the next append) and its values.

        The rotary angles of cached keys depend only on their slots, which change only on append, so the several
        denoising passes of one frame rotate the cache once.
        """
        keys, values = self.layer(index)
        if index not in self._rotated:
            self._rotated[index] = rotate(keys)
        return self._rotated[index], values

    def append(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Adds the keys and values of ``F`` new frames for every layer, evicting the oldest non-sink frames.

        Args:
            keys, values: one `(B, heads, F * N, head_dim)` tensor per layer, un-rotated.

        Raises:
            ValueError: wrong number of layers or a shape that does not match the cache.
        """
        if len(keys) != self.keys.shape[0] or len(values) != self.keys.shape[0]:
            raise ValueError(f"expected keys and values for {self.keys.shape[0]} layers, got {len(keys)}, {len(values)}")
        expected = (*self.keys.shape[1:3], None, self.keys.shape[-1])
        tokens = keys[0].shape[2]
        for tensor in (*keys, *values):
            if (*tensor.shape[:2], tensor.shape[-1]) != (*expected[:2], expected[-1]) or tensor.shape[2] != tokens:
                raise ValueError(f"cache entry has shape {tuple(tensor.shape)}, expected (B={expected[0]}, "
                                 f"heads={expected[1]}, F*N, head_dim={expected[-1]})")
        if tokens % self.tokens_per_frame:
            raise ValueError(f"{tokens} tokens is not a whole number of {self.tokens_per_frame}-token frames")
        new_frames = tokens // self.tokens_per_frame
        new_keys, new_values = torch.stack(keys), torch.stack(values)
        self._rotated.clear()
        for index in range(new_frames):
            frame = slice(index * self.tokens_per_frame, (index + 1) * self.tokens_per_frame)
            self._append_one(new_keys[..., frame, :], new_values[..., frame, :])

    def _append_one(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        n = self.tokens_per_frame
        if self.num_frames == self.capacity:
            # evict the oldest frame after the sinks: shift the recent frames one slot left
            start, end = self.sink_size * n, self.capacity * n
            self.keys[..., start:end - n, :] = self.keys[..., start + n:end, :].clone()
            self.values[..., start:end - n, :] = self.values[..., start + n:end, :].clone()
            self.valid[:, self.sink_size:self.capacity - 1] = self.valid[:, self.sink_size + 1:].clone()
            self.num_frames -= 1
        slot = slice(self.num_frames * n, (self.num_frames + 1) * n)
        self.keys[..., slot, :] = keys.to(self.keys.dtype)
        self.values[..., slot, :] = values.to(self.values.dtype)
        self.valid[:, self.num_frames] = True
        self.num_frames += 1
        self.frames_seen += 1

    def reorder(self, index: torch.Tensor) -> "FrameKVCache":
        """Returns a cache whose batch entries are ``self``'s at ``index`` `(B',)` long (branching rollouts)."""
        out = FrameKVCache.__new__(FrameKVCache)
        out.__dict__.update(self.__dict__)
        out.keys, out.values = self.keys[:, index].clone(), self.values[:, index].clone()
        out.valid = self.valid[index].clone()
        out._rotated = {}
        return out

    def attention_mask(self) -> torch.Tensor | None:
        """`(B, num_frames * N)` bool, True where a row's cached token may be attended to; None when all may."""
        valid = self.valid[:, :self.num_frames]
        if bool(valid.all()):
            return None
        return valid.repeat_interleave(self.tokens_per_frame, dim=1)

    def splice(self, rows: torch.Tensor, other: "FrameKVCache") -> None:
        """Replaces the history of rows ``rows`` with ``other``'s (a restart of those rollouts), in place.

        ``other``'s frames are right-aligned to this cache's newest slot, so every row's next frame sits at the
        same distance from its history as in ``other``; slots before a shorter history are masked. If ``other``
        holds more frames than this cache, the other rows are padded on the left (masked) to make room.

        Args:
            rows: `(R,)` long, distinct row indices.
            other: a cache of batch R with the same geometry, sinks excluded.

        Raises:
            ValueError: geometry differs, ``rows`` does not match ``other``'s batch, or the caches use sink frames
                (a restarted row would need its own sinks, which the shared slot layout cannot give it).
        """
        if self.sink_size or other.sink_size:
            raise ValueError("splicing rows into a cache with sink frames is not supported (sink_size must be 0)")
        if (other.keys.shape[0], *other.keys.shape[2:]) != (self.keys.shape[0], *self.keys.shape[2:]):
            raise ValueError(f"cache geometry differs: {tuple(other.keys.shape)} vs {tuple(self.keys.shape)} "
                             f"(batch dimension aside)")
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.keys.device)
        if rows.ndim != 1 or len(rows) != other.batch_size or len(set(rows.tolist())) != len(rows):
            raise ValueError(f"rows must be {other.batch_size} distinct indices, got {rows.tolist()}")
        if len(rows) and (rows.min() < 0 or rows.max() >= self.batch_size):
            raise ValueError(f"rows {rows.tolist()} out of range for a cache of batch {self.batch_size}")
        n = self.tokens_per_frame
        if other.num_frames > self.num_frames:  # make room: shift everyone right, the new leading slots masked
            shift = other.num_frames - self.num_frames
            used = self.num_frames * n
            self.keys[..., shift * n:shift * n + used, :] = self.keys[..., :used, :].clone()
            self.values[..., shift * n:shift * n + used, :] = self.values[..., :used, :].clone()
            self.valid[:, shift:shift + self.num_frames] = self.valid[:, :self.num_frames].clone()
            self.valid[:, :shift] = False
            self.num_frames = other.num_frames
        start = self.num_frames - other.num_frames
        self.keys[:, rows, :, start * n:self.num_frames * n] = other.keys[:, :, :, :other.num_frames * n].to(self.keys.dtype)
        self.values[:, rows, :, start * n:self.num_frames * n] = \
            other.values[:, :, :, :other.num_frames * n].to(self.values.dtype)
        self.valid[rows, :start] = False
        self.valid[rows, start:self.num_frames] = other.valid[:, :other.num_frames]
        self._rotated.clear()
        self.frames_seen += 1

    def nbytes(self) -> int:
        """Bytes held by keys and values."""
        return self.keys.numel() * self.keys.element_size() * 2
