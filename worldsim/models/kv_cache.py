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

Attention sinks (StreamingLLM, Xiao et al. 2024, "Efficient Streaming Language Models with Attention Sinks"):
with ``sink_size > 0`` the first frames of a rollout (its real context, usually) stay attendable for ever, after
the sliding window has moved past them. They help long rollouts of a model trained on short windows keep the
scene's static content (layout, colours, the goal) instead of drifting, at the cost of ``sink_size`` more frames of
attention per step; with ``sink_size=0`` (the default) the cache is a plain sliding window. The pipeline reads the
setting from its metadata (``worldsim.json``: ``"sink_size"``, with ``"local_attn_size"``).

Sinks are per rollout. A row restarted by :meth:`FrameKVCache.splice` (one sub-env of a vector env reset by a
``reset_mask`` or by autoreset) gets its *own* first frames as sinks, never the previous episode's, and until its
sink slots are full its next frames go into them, as in a fresh cache. Rotary positions of a row's sinks are
shifted so that every distance between the new frame and a cached frame equals the distance in a fresh cache
holding the same history (:meth:`FrameKVCache.frame_positions`): a restarted row gives what a fresh rollout from
the same context gives.
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

    Slot layout: slots ``[0, sink_size)`` are the sink region, slots ``[sink_size, num_frames)`` the sliding
    region (the oldest non-sink frame is evicted when the cache is full). All rows share ``num_frames``;
    ``valid`` `(B, capacity)` bool marks the slots a row really holds. A row that did not start with the others
    (:meth:`splice`, e.g. one sub-env of a vector env restarting) holds a valid *prefix* of the sink region (its
    first frames; the rest of the sink region fills with its next frames, as a fresh cache's would) and a valid
    *suffix* of the sliding region (its most recent frames, right-aligned to the newest slot); its other slots are
    masked out of attention (:meth:`attention_mask`). Rotary positions are the slot indices, except that a row's
    sinks are shifted by the number of masked slots it has (:meth:`frame_positions`), so every row sees exactly the
    distances of a cache that holds only its own history.

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
        self.splices = 0  # restarts spliced in: a CUDA-graph step captured before one is stale
        #: set (by a CUDA-graph step, which checked it once) when every row holds every slot: the attention mask is
        #: then None without reading ``valid`` on the device, which a captured graph cannot do
        self.assume_all_valid = False
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
        n, sinks = self.tokens_per_frame, self.sink_size
        if self.num_frames == self.capacity:
            # evict the oldest frame after the sinks: shift the recent frames one slot left
            start, end = sinks * n, self.capacity * n
            self.keys[..., start:end - n, :] = self.keys[..., start + n:end, :].clone()
            self.values[..., start:end - n, :] = self.values[..., start + n:end, :].clone()
            self.valid[:, sinks:self.capacity - 1] = self.valid[:, sinks + 1:].clone()
            self.num_frames -= 1
        slot = self.num_frames
        # rows restarted with fewer frames than the sink region holds: their next frame is one of their sinks
        filled = self.valid[:, :min(slot, sinks)].sum(dim=1) if sinks else None
        self.keys[..., slot * n:(slot + 1) * n, :] = keys.to(self.keys.dtype)
        self.values[..., slot * n:(slot + 1) * n, :] = values.to(self.values.dtype)
        self.valid[:, slot] = True
        if filled is not None:
            for row in (filled < min(slot, sinks)).nonzero(as_tuple=True)[0].tolist():
                target = int(filled[row])
                self.keys[:, row, :, target * n:(target + 1) * n] = keys[:, row].to(self.keys.dtype)
                self.values[:, row, :, target * n:(target + 1) * n] = values[:, row].to(self.values.dtype)
                self.valid[row, target] = True
                self.valid[row, slot] = False
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
        if self.assume_all_valid:
            return None
        valid = self.valid[:, :self.num_frames]
        if bool(valid.all()):
            return None
        return valid.repeat_interleave(self.tokens_per_frame, dim=1)

    def frame_positions(self) -> torch.Tensor | None:
        """Per-row temporal rotary positions of the held frames, or None when every row uses the slot indices.

        The frame being generated sits at position ``num_frames``. A row holding ``k`` frames (its valid slots) in a
        cache of ``num_frames`` slots has its sink slot ``j`` at position ``j + num_frames - k``, so its distance to
        the new frame is ``k - j``, as in a fresh cache holding only that row's frames; its sliding-region frames
        are right-aligned and keep their slot index. Rows that started with the others (every slot valid) and
        caches without sinks always get None: the shared slot positions.

        Returns:
            `(B, num_frames)` long, or None.
        """
        sinks = min(self.sink_size, self.num_frames)
        if not sinks:
            return None
        offset = self.num_frames - self.valid[:, :self.num_frames].sum(dim=1)  # (B,) masked slots per row
        if not bool(offset.any()):
            return None
        positions = torch.arange(self.num_frames, device=self.valid.device).repeat(self.batch_size, 1)
        positions[:, :sinks] += offset[:, None]
        return positions

    def _row_layout(self, row: int) -> tuple[int, int]:
        """(sink frames, sliding-region frames) that row ``row`` holds."""
        sinks = min(self.sink_size, self.num_frames)
        return int(self.valid[row, :sinks].sum()), int(self.valid[row, self.sink_size:self.num_frames].sum())

    def splice(self, rows: torch.Tensor, other: "FrameKVCache") -> None:
        """Replaces the history of rows ``rows`` with ``other``'s (a restart of those rollouts), in place.

        Each restarted row gets ``other``'s sink frames in its sink slots (its own sinks, not the previous
        episode's; slots it cannot fill yet are masked and filled by its next frames) and ``other``'s recent frames
        right-aligned to this cache's newest slot, so its next frame sits at the same distance from each of its
        frames as in ``other`` (:meth:`frame_positions`); the slots in between are masked. If ``other`` needs more
        slots than this cache holds, the other rows' recent frames move right to make room (the new slots masked
        for them). The rows not in ``rows`` attend to exactly what they did before.

        Args:
            rows: `(R,)` long, distinct row indices.
            other: a cache of batch R with the same geometry (layers, heads, head_dim, tokens per frame,
                ``local_attn_size`` and ``sink_size``), e.g. a fresh one from the restarted rows' new context.

        Raises:
            ValueError: geometry or ``sink_size`` differs, or ``rows`` does not match ``other``'s batch (the
                message names the bad value); the cache is unchanged.
        """
        if (other.keys.shape[0], *other.keys.shape[2:]) != (self.keys.shape[0], *self.keys.shape[2:]):
            raise ValueError(f"cache geometry differs: {tuple(other.keys.shape)} vs {tuple(self.keys.shape)} "
                             f"(batch dimension aside)")
        if other.sink_size != self.sink_size:
            raise ValueError(f"cache sink_size differs: {other.sink_size} vs {self.sink_size}")
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.keys.device)
        if rows.ndim != 1 or len(rows) != other.batch_size or len(set(rows.tolist())) != len(rows):
            raise ValueError(f"rows must be {other.batch_size} distinct indices, got {rows.tolist()}")
        if len(rows) and (rows.min() < 0 or rows.max() >= self.batch_size):
            raise ValueError(f"rows {rows.tolist()} out of range for a cache of batch {self.batch_size}")
        n, sinks = self.tokens_per_frame, self.sink_size
        layouts = [other._row_layout(index) for index in range(other.batch_size)]
        empty = [index for index, layout in enumerate(layouts) if not sum(layout)]
        if empty:
            raise ValueError(f"other's rows {empty} hold no frames; a restarted row needs at least one")
        needed = max([sinks + recent if recent else held_sinks for held_sinks, recent in layouts], default=0)
        if needed > self.num_frames:  # make room: the sliding region moves right, the new slots masked
            shift, old = needed - self.num_frames, self.num_frames
            if old > sinks:
                self.keys[..., (sinks + shift) * n:needed * n, :] = self.keys[..., sinks * n:old * n, :].clone()
                self.values[..., (sinks + shift) * n:needed * n, :] = self.values[..., sinks * n:old * n, :].clone()
                self.valid[:, sinks + shift:needed] = self.valid[:, sinks:old].clone()
                self.valid[:, sinks:sinks + shift] = False
            else:  # only sinks held so far: the new slots are unfilled sinks and an empty sliding region
                self.valid[:, old:needed] = False
            self.num_frames = needed
        end = self.num_frames
        for index, (row, (held_sinks, recent)) in enumerate(zip(rows.tolist(), layouts)):
            self.valid[row, :end] = False
            if held_sinks:
                self.keys[:, row, :, :held_sinks * n] = other.keys[:, index, :, :held_sinks * n].to(self.keys.dtype)
                self.values[:, row, :, :held_sinks * n] = \
                    other.values[:, index, :, :held_sinks * n].to(self.values.dtype)
                self.valid[row, :held_sinks] = True
            if recent:
                source = slice((other.num_frames - recent) * n, other.num_frames * n)
                self.keys[:, row, :, (end - recent) * n:end * n] = other.keys[:, index, :, source].to(self.keys.dtype)
                self.values[:, row, :, (end - recent) * n:end * n] = \
                    other.values[:, index, :, source].to(self.values.dtype)
                self.valid[row, end - recent:end] = True
        self._rotated.clear()
        self.frames_seen += 1
        self.splices += 1
        self.assume_all_valid = False

    def nbytes(self) -> int:
        """Bytes held by keys and values."""
        return self.keys.numel() * self.keys.element_size() * 2
