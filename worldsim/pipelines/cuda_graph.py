"""One streaming step of the world model captured as a CUDA graph, so that a single env's step costs one graph launch
instead of a few thousand kernel launches.

A step of a small model is launch-bound on a GPU: 10 denoising passes of a 6-block transformer, the decoder and the
cache update are thousands of small kernels, each with microseconds of CPU-side launch cost, so a single env steps at
the same rate on an H100 as on two CPU cores. ``torch.cuda.CUDAGraph`` records those kernels once and replays them
with one launch (PyTorch's "CUDA Graphs" notes; the same mechanism as ``torch.compile(mode="reduce-overhead")``).

A graph replays fixed kernels on fixed memory, so the step must have the same shapes at every step and never read
the device from the host. That holds for a rollout in its steady state:

* the KV cache is full (every step evicts one frame and appends one: the same slots, the same shapes), holds no
  attention sinks and no restarted rows (no attention mask);
* the sampler is fixed (its sigmas become constants of the graph) and there is no action guidance;
* the producing action's embedding and the task embedding are computed before the replay, outside the graph
  (routing to action experts and checking task indices read the device), and copied into the graph's input buffers,
  as are the initial noise and the history noise, drawn from the caller's generator in the order the eager step
  draws them, so a graph step gives what the eager step gives.

Until the cache is full (the first ``local_attn_size`` steps) and whenever a condition fails, the pipeline steps
eagerly. :meth:`~worldsim.pipelines.WorldModelPipeline.enable_cuda_graphs` turns this on.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from worldsim.models.autoencoders import LightDecoder, decode_latents, latent_normalization


class GraphedCachedStep:
    """The cached step of :meth:`WorldModelPipeline.step` for one rollout batch, as a replayable CUDA graph.

    Args:
        pipeline: the :class:`~worldsim.pipelines.WorldModelPipeline`.
        state: a cached-path :class:`~worldsim.pipelines.world_model.RolloutState` that :meth:`unsupported` accepts.
        context_noise: the history noise level of every step.
        example_embedding: `(B, 1, D)` a producing-action embedding as :meth:`__call__` will be given (its dtype
            sizes the input buffer; the warm-up steps of a capture run on it).
        capture: record a CUDA graph (the pipeline must be on a CUDA device:
            :meth:`~worldsim.pipelines.WorldModelPipeline.enable_cuda_graphs` checks). False runs the same body eagerly
            at every :meth:`__call__`: what the tests on CPU check against the eager step.

    Raises:
        ValueError: a state :meth:`unsupported` refuses.
        RuntimeError: the capture failed (torch's message); the rollout's KV cache is restored first.
    """

    def __init__(self, pipeline, state, context_noise: float, example_embedding: torch.Tensor, capture: bool = True):
        reason = self.unsupported(pipeline, state, 1.0)
        if reason:
            raise ValueError(f"this rollout state cannot be stepped by a CUDA graph: {reason}")
        self.pipeline, self.cache, self.context_noise = pipeline, state.cache, float(context_noise)
        self.splices = state.cache.splices
        batch, device = state.batch_size, pipeline.device
        transformer = pipeline.transformer
        # tensors the graph reads that others own must outlive it: the rotary angles (memoised by the model, which
        # may clear its memo) and the frame decoder's latent normalisation, put on the device once here (built on
        # the host inside the graph it would be a host-to-device copy, which a capture forbids)
        capacity = state.cache.capacity
        self.rotary = (transformer.rotary(1, device, first_frame=capacity), transformer.rotary(capacity, device))
        decoder = pipeline.frame_decoder
        self.normalization = None if isinstance(decoder, LightDecoder) else tuple(
            value.to(device) if isinstance(value, torch.Tensor) else value for value in latent_normalization(decoder))
        timesteps = pipeline.scheduler.timesteps.to(device)
        sigmas = pipeline.scheduler.sigmas.tolist()  # python floats: constants of the graph
        self.timesteps = [timesteps[index:index + 1].float().expand(batch, 1).clone()
                          for index in range(len(timesteps))]
        self.steps = [sigmas[index + 1] - sigmas[index] for index in range(len(timesteps))]  # Euler dt per step
        shape = (batch, 1, *state.latents.shape[2:])
        self.noise = torch.zeros(shape, device=device)
        self.history_noise = torch.zeros(shape, device=device)
        self.history_timestep = torch.full((batch, 1), self.context_noise * 1000.0, device=device)
        self.embedding = example_embedding.detach().clone()
        self.task = None if state.task is None else state.task.clone()
        self.task_embedding = None
        if transformer.task_embedder is not None:
            with pipeline._autocast():
                self.task_embedding = transformer.embed_task(self.task, batch, self.embedding.dtype).clone()
        self.sample, self.frames, self.latents = None, None, None
        self.graph = None
        self.cache.assume_all_valid = True  # checked by unsupported() (it stays true until a splice clears it)
        if capture:
            self._capture()

    @staticmethod
    def unsupported(pipeline, state, action_guidance_scale: float) -> str | None:
        """Why ``state`` cannot be stepped by a graph (None when it can). Reads ``cache.valid`` on the device once."""
        cache = state.cache
        if cache is None:
            return "it is not on the cached path"
        if cache.num_frames != cache.capacity:
            return f"its KV cache is not full yet ({cache.num_frames} of {cache.capacity} frames)"
        if cache.sink_size:
            return "its KV cache keeps attention sinks"
        if state.decoder_cache is not None:
            return "its latent frames are decoded through a video VAE's temporal cache"
        if action_guidance_scale != 1.0:
            return "action guidance is on"
        if pipeline.scheduler.config.get("stochastic_sampling", False):
            return "the scheduler samples stochastically"
        if not cache.assume_all_valid and not bool(cache.valid.all()):
            return "some rows were restarted (masked cache slots)"
        return None

    def stale(self, state) -> bool:
        """True when ``state``'s cache is not this graph's or was spliced since the capture."""
        return state.cache is not self.cache or state.cache.splices != self.splices

    def _body(self) -> None:
        """The step on the static buffers: denoise, decode, write the finished frame into the cache."""
        pipeline, transformer = self.pipeline, self.pipeline.transformer
        sample = self.noise
        # autocast's weight-cast cache must be off inside a capture (PyTorch's CUDA Graphs notes, "Usage with AMP")
        with torch.autocast(pipeline.device.type, dtype=torch.bfloat16, enabled=pipeline.metadata.get("bf16", True),
                            cache_enabled=False):
            for timestep, dt in zip(self.timesteps, self.steps):
                velocity = transformer.forward_cached(sample, timestep, self.embedding, None, self.cache,
                                                      task=self.task, action_embedding=self.embedding,
                                                      task_embedding=self.task_embedding).float()
                # FlowMatchEulerDiscreteScheduler.step (deterministic): x <- x + (sigma_next - sigma) v, in float32
                sample = sample + dt * velocity
            frames = decode_latents(pipeline.frame_decoder, sample[:, 0], normalization=self.normalization)
            latents = sample if self.context_noise == 0 else \
                (1.0 - self.context_noise) * sample + self.context_noise * self.history_noise
            transformer.forward_cached(latents, self.history_timestep, self.embedding, None, self.cache,
                                       update_cache=True, return_output=False, task=self.task,
                                       action_embedding=self.embedding, task_embedding=self.task_embedding)
        if self.sample is None:
            self.sample, self.frames, self.latents = sample, frames, latents
        else:  # replays and eager calls write the same output buffers
            self.sample.copy_(sample)
            self.frames.copy_(frames)
            self.latents.copy_(latents)

    def _capture(self) -> None:
        """Warms up on a side stream (lazy initialisation, allocator), then records the body. The warm-up steps
        really run, so the rollout's KV cache is restored afterwards, whether the capture succeeded or not."""
        cache = self.cache
        saved = cache.keys.clone(), cache.values.clone(), cache.valid.clone(), cache.frames_seen
        try:
            with torch.cuda.device(self.pipeline.device):
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(2):
                        self._body()
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self._body()  # recorded, not run
                self.graph = graph
        finally:
            cache.keys.copy_(saved[0])
            cache.values.copy_(saved[1])
            cache.valid.copy_(saved[2])
            cache.frames_seen = saved[3]
            cache._rotated.clear()

    def __call__(self, producing_embedding: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor,
                                                                              torch.Tensor]:
        """One step: ``producing_embedding`` `(B, 1, D)` (the new frame's producing action, embedded); the noise is
        drawn from ``generator`` as the eager step draws it (initial noise, then history noise).

        Returns:
            ``(frames (B, H, W, 3) uint8, clean latent (B, 1, C, h, w), history latent (B, 1, C, h, w))``, views of
            the graph's output buffers (overwritten by the next call; copy to keep).
        """
        self.noise.copy_(randn_tensor(self.noise.shape, generator=generator).to(self.noise.device))
        if self.context_noise:
            self.history_noise.copy_(randn_tensor(self.history_noise.shape, generator=generator)
                                     .to(self.history_noise.device))
        self.embedding.copy_(producing_embedding)
        if self.graph is None:
            self._body()
        else:
            self.graph.replay()
            self.cache.frames_seen += 1  # what the recorded append does on the host, which a replay skips
            self.cache._rotated.clear()
        return self.frames, self.sample, self.latents
