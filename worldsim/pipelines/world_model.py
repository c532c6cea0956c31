"""``WorldModelPipeline``: autoencoder + world-model transformer + diffusers scheduler, and the autoregressive loop.

Rollout (noise-augmented history, after Astra and diffusion forcing): context frames are encoded to latents and
noised once to ``context_noise``; each new frame starts from Gaussian noise and is denoised in
``num_inference_steps`` Euler steps of diffusers' ``FlowMatchEulerDiscreteScheduler`` while attending to the
history; the finished frame is noised to ``context_noise`` and joins the history. A rollout can run for any
number of steps.

Two equivalent ways to attend to the history:

* cached (default, ``use_cache=True``): history frames live in a :class:`~worldsim.models.kv_cache.FrameKVCache`.
  A finished frame enters it by one extra forward pass at the history noise level (the clean-context re-encoding of
  streaming video diffusion); each denoising step then costs attention over the cache. The cache keeps
  ``sink_size`` first frames plus the last ``local_attn_size - 1`` frames.
* full recomputation (``use_cache=False``): every denoising step runs the whole window, the last
  ``window_size - 1`` history latents plus the new frame. Same frames while the history fits the window; kept as
  the reference the cache is tested and benchmarked against.

The saved folder (its layout, writing it, and the checks at load) is :mod:`worldsim.pipelines.loading`; the
embodiments a pipeline can be driven by are :mod:`worldsim.pipelines.embodiments`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from worldsim.constants import OBS_IMAGE
from worldsim.models.autoencoders import (LightDecoder, VideoDecoderCache, decode_latents, encode_frames, encode_video,
                                          temporal_compression)
from worldsim.models.heads import OutcomeHeads
from worldsim.models.kv_cache import FrameKVCache
from worldsim.models.world_model import WorldModelTransformer
from worldsim.pipelines.embodiments import Embodiment, embodiments_from_metadata
from worldsim.pipelines.loading import heads_folders, load_pipeline_parts, load_state_predictors, save_pipeline
from worldsim.utils.shapes import size_pair

__all__ = ["Embodiment", "RolloutState", "WorldModelPipeline", "check_generator", "embodiments_from_metadata",
           "heads_folders"]


def check_generator(generator: torch.Generator | list[torch.Generator] | None, batch_size: int) -> None:
    """Checks a per-rollout generator list (diffusers' convention: row b's noise comes from ``generator[b]``).

    Raises:
        ValueError: ``generator`` is a list whose length is not ``batch_size`` (the message names both).
    """
    if isinstance(generator, list) and len(generator) != batch_size:
        raise ValueError(f"generator is a list of {len(generator)} torch.Generators for a batch of {batch_size} "
                         f"rollouts; pass one per rollout, or a single generator")


@dataclass
class RolloutState:
    """The history window of a batch of rollouts.

    Attributes:
        latents: `(B, L, C, h, w)` float32, history latents as the model sees them (noised to ``context_noise``).
        action: `(B, L, A)` float32 normalised; ``action[:, i]`` was applied after history frame i (the last entry
            is filled by the next :meth:`WorldModelPipeline.step`).
        frames: `(B, H, W, 3)` uint8, the newest frame in pixels.
        num_steps: frames generated so far.
        cache: the history's keys and values on the cached path, else None. :meth:`WorldModelPipeline.step`
            appends to it in place, so a state is consumed by stepping it (stepping it again raises); :meth:`clone`
            first to branch.
        cache_version: ``cache.frames_seen`` when this state was made.
        embodiment: name of the embodiment whose actions drive these rollouts.
        frame_latents: `(B, C, h, w)` float32, the newest imagined frame's clean latent (what ``frames`` decodes
            from; the outcome heads read it directly), or None for a state made from real context.
        task: `(B,)` long, the task each rollout imagines (task-conditioned models; the null task where none was
            given), or None for a model without task conditioning.
        observation_state: `(B, S)` float32 env units, the newest frame's ``observation.state`` (given with the
            context, then predicted by the embodiment's state predictor at every step), or None.
        decoder_cache: for a model on a time-compressing video VAE (:attr:`WorldModelPipeline.frames_per_latent`
            ``k > 1``), the VAE decoder's temporal cache over the history
            (:class:`~worldsim.models.autoencoders.VideoDecoderCache`), else None.
        chunk_frames: `(B, k, H, W, 3)` uint8, every video frame of the newest latent frame when ``k > 1`` (``frames``
            is the last of them), else None.
    """

    latents: torch.Tensor
    action: torch.Tensor
    frames: torch.Tensor
    num_steps: int = 0
    cache: FrameKVCache | None = None
    cache_version: int = -1
    embodiment: str | None = None
    frame_latents: torch.Tensor | None = None
    task: torch.Tensor | None = None
    observation_state: torch.Tensor | None = None
    decoder_cache: VideoDecoderCache | None = None
    chunk_frames: torch.Tensor | None = None

    def __post_init__(self):
        if self.cache is not None and self.cache_version < 0:
            self.cache_version = self.cache.frames_seen

    @property
    def is_stale(self) -> bool:
        """True when the cache has moved on since this state was made (it was already stepped)."""
        return self.cache is not None and self.cache.frames_seen != self.cache_version

    @property
    def batch_size(self) -> int:
        return self.latents.shape[0]

    def clone(self) -> "RolloutState":
        """An independent copy (the cache included), for branching rollouts from one state."""
        if self.is_stale:
            raise ValueError("cannot clone a rollout state that was already stepped (its cache has moved on)")
        return self.select(torch.arange(self.batch_size))

    def select(self, rows: torch.Tensor) -> "RolloutState":
        """A new state of the rollouts ``rows`` `(R,)` long (repeats allowed: ``[0, 0, 1, 1]`` branches every rollout
        in two), every per-rollout field and the KV cache indexed alike; ``self`` is left as it is.

        Raises:
            ValueError: this state was already stepped (its cache has moved on).
        """
        if self.is_stale:
            raise ValueError("cannot select from a rollout state that was already stepped (its cache has moved on)")
        rows = torch.as_tensor(rows, dtype=torch.long)

        def pick(value):
            return None if value is None else value[rows.to(value.device)].clone()

        cache = None if self.cache is None else self.cache.reorder(rows.to(self.cache.keys.device))
        decoder_cache = None if self.decoder_cache is None else self.decoder_cache.select(rows)
        return RolloutState(pick(self.latents), pick(self.action), pick(self.frames), self.num_steps, cache,
                            embodiment=self.embodiment, frame_latents=pick(self.frame_latents), task=pick(self.task),
                            observation_state=pick(self.observation_state), decoder_cache=decoder_cache,
                            chunk_frames=pick(self.chunk_frames))



class WorldModelPipeline:
    """A trained world model, ready to imagine: encode context, step with actions, decode frames.

    Args:
        autoencoder: diffusers ``AutoencoderKL`` with ``shift_factor`` / ``scaling_factor`` set.
        transformer: :class:`~worldsim.models.WorldModelTransformer`.
        scheduler: diffusers ``FlowMatchEulerDiscreteScheduler``.
        metadata: dict with ``window_size``, ``image_size``, ``fps``, ``action_normalizer`` (``min``/``max``),
            ``action_space``, ``embodiment``, ``env_id``, ``num_inference_steps``, ``context_noise``.
        start_frames: optional dict ``{"frames": (K, n, H, W, 3) uint8, "action": (K, n - 1, A) float32}``.
        heads: optional outcome heads (reward / termination / success per frame): one
            :class:`~worldsim.models.heads.OutcomeHeads` (for the embodiment its config names, or for any when it
            names none) or ``{embodiment: OutcomeHeads}``; loaded from ``<folder>/heads/<embodiment>`` (or a single
            ``<folder>/heads`` written before heads were per embodiment).
        decoder: optional :class:`~worldsim.models.autoencoders.LightDecoder`, loaded from ``<folder>/decoder``
            when present; frames are decoded by the autoencoder unless the metadata's ``decoder`` is ``"light"``
            (the model's default) or :meth:`set_decoder` picks it.
        state_predictors: optional ``{embodiment: StatePredictor}`` that predict each imagined frame's
            ``observation.state`` (``<folder>/state/<embodiment>``; ``worldsim train-state``).

    >>> pipe = WorldModelPipeline.from_pretrained("checkpoints/joint")          # doctest: +SKIP
    >>> frames = pipe.rollout(context_frames, context_action, action)           # doctest: +SKIP
    >>> frames.shape  # (B, S, 64, 64, 3) uint8                                  # doctest: +SKIP
    """

    def __init__(self, autoencoder: AutoencoderKL, transformer: WorldModelTransformer,
                 scheduler: FlowMatchEulerDiscreteScheduler, metadata: dict, start_frames: dict | None = None,
                 heads: OutcomeHeads | dict[str, OutcomeHeads] | None = None, decoder: LightDecoder | None = None,
                 state_predictors: dict | None = None):
        # channels-last convolutions: 1.2x (fp32) to 3x (bf16) faster autoencoder passes on CPU (oneDNN)
        # channels-last suits the 2-D autoencoder's convolutions; a video VAE's 3-D ones keep their layout
        self.autoencoder = autoencoder.eval().to(memory_format=torch.channels_last) \
            if isinstance(autoencoder, AutoencoderKL) else autoencoder.eval()
        self.decoder = None if decoder is None else decoder.eval().to(memory_format=torch.channels_last)
        self.frame_decoder: AutoencoderKL | LightDecoder = self.autoencoder  # what turns latents into frames
        self.transformer = transformer.eval()
        self.quantization: str | None = None  # set by quantize()
        self._cuda_graphs: str | None = None  # enable_cuda_graphs(): "capture", "eager" (its body, no graph) or None
        self._graph = None  # the current GraphedCachedStep
        self._graph_candidate = None  # (cache, splices, key, eligible steps in a row) before a capture
        #: steps taken through a CUDA-graph step (a benchmark reports what share of its steps were replayed)
        self.graph_steps = 0
        self._timesteps_key = None
        self.scheduler = scheduler
        self.metadata = dict(metadata)
        self.start_frames = start_frames
        self.embodiments = embodiments_from_metadata(self.metadata, transformer)
        self.default_embodiment = self.metadata.get("embodiment") or next(iter(self.embodiments))
        if self.default_embodiment not in self.embodiments:
            raise ValueError(f"default embodiment {self.default_embodiment!r} is not among {list(self.embodiments)}")
        self.normalizer = self.embodiments[self.default_embodiment].normalizer
        if self.metadata.get("decoder", "full") == "light" and self.decoder is not None:
            self.frame_decoder = self.decoder  # the model's default frame decoder (set_decoder changes it)
        for key in ("window_size", "image_size"):
            if key not in self.metadata:
                raise ValueError(f"pipeline metadata lacks {key!r}")
        if self.frames_per_latent != 1:
            if temporal_compression(self.autoencoder) != self.frames_per_latent:
                raise ValueError(f"the metadata groups {self.frames_per_latent} frames per latent frame, but the "
                                 f"autoencoder compresses time {temporal_compression(self.autoencoder)}x")
            if self.transformer.config.action_dim % self.frames_per_latent:
                raise ValueError(f"the transformer's action width {self.transformer.config.action_dim} is not "
                                 f"{self.frames_per_latent} grouped actions")
            self.frame_decoder = self.autoencoder  # a light decoder is per frame: it cannot follow the VAE's time
        #: outcome heads by embodiment name (None: heads trained before heads named their embodiment, for any)
        #: ``observation.state`` predictors by embodiment name (:class:`~worldsim.models.state.StatePredictor`)
        self.state_predictors: dict = {}
        for name, predictor in (state_predictors or {}).items():
            self.embodiment(name)  # unknown names fail here
            reads = (predictor.config.in_channels, *predictor.latent_size)
            if reads != (transformer.config.in_channels, *transformer.latent_size):
                raise ValueError(f"the state predictor of {name!r} reads latents {reads}, the model's are "
                                 f"{(transformer.config.in_channels, *transformer.latent_size)}")
            width = self.embodiment(name).action_dim
            if predictor.action_dim not in (0, width):
                raise ValueError(f"the state predictor of {name!r} reads {predictor.action_dim} action dimensions, "
                                 f"the embodiment's actions have {width}")
            self.state_predictors[name] = predictor.eval()
        self.outcome_heads: dict[str | None, OutcomeHeads] = {}
        for name, module in (heads.items() if isinstance(heads, dict) else [(None, heads)] if heads is not None
                             else []):
            self.add_heads(module, name)

    def add_heads(self, heads: OutcomeHeads, embodiment: str | None = None) -> None:
        """Sets the outcome heads of one embodiment (replacing that embodiment's, keeping the others').

        Args:
            heads: the heads; their ``config.embodiment`` names the embodiment unless ``embodiment`` is given.
            embodiment: the embodiment they serve (None: ``heads.config.embodiment``; heads naming none serve every
                embodiment without heads of its own).

        Raises:
            ValueError: an embodiment the model does not know, or one that differs from the heads' own config.
        """
        name = embodiment if embodiment is not None else heads.config.embodiment
        if name is not None:
            self.embodiment(name)  # unknown names fail here
            if heads.config.embodiment not in (None, name):
                raise ValueError(f"heads trained for {heads.config.embodiment!r} cannot serve embodiment {name!r}")
        self.outcome_heads[name] = heads.eval()

    @property
    def heads(self) -> OutcomeHeads | None:
        """The default embodiment's outcome heads (:meth:`heads_for`); setting it replaces them (None: removes every
        embodiment's heads)."""
        return self.heads_for()

    @heads.setter
    def heads(self, value: OutcomeHeads | None) -> None:
        if value is None:
            self.outcome_heads = {}
        else:
            self.add_heads(value)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, path: str | Path) -> Path:
        """Writes the pipeline folder (see :mod:`worldsim.pipelines.loading`) with the SHA-256 manifest of its files in
        ``model_index.json`` (:func:`worldsim.registry.write_manifest`); returns it. Callers that must never leave a
        half-written folder write into a temporary folder and rename it (training does).

        Raises:
            RuntimeError: the transformer was quantized (:meth:`quantize`); nothing is written.
        """
        return save_pipeline(self, path)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "WorldModelPipeline":
        """Loads a pipeline folder written by :meth:`save_pretrained`.

        Nothing in the folder can run code: component classes come from the allow-list of
        :mod:`worldsim.registry` (a ``model_index.json`` or ``config.json`` naming another class is refused before
        any weight is read), weights only from safetensors, and every file the manifest lists must match its SHA-256.

        Raises:
            FileNotFoundError: the folder or one of its parts is missing (the message names it).
            ValueError: a class outside the allow-list, a malformed JSON file, a file whose SHA-256 differs from the
                manifest (truncated, corrupted or edited), weights that are not safetensors or do not match their
                ``config.json``, or ``worldsim.json`` without an action normaliser.
        """
        parts = load_pipeline_parts(path, device)
        predictors = load_state_predictors(path, device)
        known = embodiments_from_metadata(parts["metadata"], parts["transformer"])
        for name in sorted(set(predictors) - set(known)):  # kept in the folder, of no use to this model
            warnings.warn(f"{path}: state/{name} is for an embodiment this model does not have ({sorted(known)}); "
                          f"not loaded")
        return cls(**parts, state_predictors={name: predictor for name, predictor in predictors.items()
                                              if name in known})

    def set_decoder(self, name: str | None = "full") -> None:
        """Picks what decodes imagined latents into frames from now on: ``"full"`` (the autoencoder's own
        decoder; None means the same) or ``"light"`` (the folder's :class:`~worldsim.models.autoencoders.LightDecoder`,
        about 3.5x fewer FLOPs per frame, see docs/benchmarks.md).

        Raises:
            ValueError: another name, or ``"light"`` on a pipeline without a light decoder (train one with
                ``worldsim train-decoder``); the choice is unchanged then.
        """
        if name in (None, "full"):
            self.frame_decoder = self.autoencoder
        elif name == "light":
            if self.frames_per_latent != 1:
                raise ValueError("this model's latent frames each hold several video frames, which only its video "
                                 "VAE decodes; use decoder='full'")
            if self.decoder is None:
                raise ValueError("this model has no light decoder (no decoder/ folder); train one with "
                                 "`worldsim train-decoder --model <folder> --dataset <data>` or use decoder='full'")
            self.frame_decoder = self.decoder
        else:
            raise ValueError(f"decoder must be 'full' or 'light', got {name!r}")

    def enable_cuda_graphs(self, enabled: bool = True, capture: bool = True) -> None:
        """Steps single rollouts and batches in their steady state through a captured CUDA graph
        (:class:`~worldsim.pipelines.cuda_graph.GraphedCachedStep`): one graph launch per step instead of thousands of
        kernel launches, for a step that is launch-bound on a GPU. The graph is captured at the third step in a row whose KV
        cache is full (branches that step once never pay for a capture) and again whenever the sampler, the context
        noise, the decoder, bf16 or the rollouts (a new :meth:`encode_context`, a :meth:`restart`) change; other steps (cache filling, action guidance, attention
        sinks, restarted rows, a video VAE's temporal cache) run eagerly as before. Results equal the eager step's.

        Args:
            enabled: on or off (off drops the captured graph).
            capture: False runs the graph's body eagerly, with its buffers and code path but no graph: for checking
                it on a machine without a GPU.

        Raises:
            ValueError: ``capture`` on a pipeline that is not on a CUDA device.

        A capture that fails (a kernel that reads the device from the host, memory) warns and turns graphs off; the
        rollout carries on eagerly from its unchanged state.
        """
        if enabled and capture and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the pipeline on a CUDA device; it is on {self.device} "
                             f"(pass capture=False to run the graph's body eagerly)")
        self._cuda_graphs = ("capture" if capture else "eager") if enabled else None
        self._graph, self._graph_candidate = None, None

    @contextlib.contextmanager
    def graphs_paused(self):
        """Steps eagerly inside the ``with`` block (to count FLOPs, say), keeping a captured CUDA graph for after."""
        mode, self._cuda_graphs = self._cuda_graphs, None
        try:
            yield
        finally:
            self._cuda_graphs = mode

    def _graphed_step(self, state: RolloutState, producing: torch.Tensor, context_noise: float, generator,
                      spec: Embodiment) -> RolloutState | None:
        """:meth:`_step_cached` through the CUDA graph step, or None when this state needs the eager step."""
        from worldsim.pipelines.cuda_graph import GraphedCachedStep

        graph = self._graph
        key = (self._timesteps_key, float(context_noise), self.decoder_name, bool(self.metadata.get("bf16", True)))
        current = graph is not None and not graph.stale(state) and graph.key == key
        if not current:
            self._graph = graph = None  # frees the old graph's memory pool and the old rollout's cache
            # capture only for a cache that keeps stepping: the third eligible step in a row of the same cache
            # (branches of steering and disagreement, stepped once each, never pay for a capture)
            if GraphedCachedStep.unsupported(self, state, 1.0):
                self._graph_candidate = None
                return None
            candidate = (state.cache, state.cache.splices, key)
            previous = self._graph_candidate
            same = previous is not None and previous[0] is candidate[0] and previous[1:3] == candidate[1:]
            self._graph_candidate = (*candidate, previous[3] + 1 if same else 1)
            if self._graph_candidate[3] < 3:
                return None
        batch = state.batch_size
        with self._autocast():
            embedding = self.transformer.encode_actions(producing.to(self.transformer.weight_dtype),
                                                        self._ids(spec, batch))
        if graph is None:
            self._graph_candidate = None
            try:
                graph = GraphedCachedStep(self, state, context_noise, embedding, capture=self._cuda_graphs == "capture")
            except RuntimeError as error:  # the cache is restored; step eagerly from now on
                warnings.warn(f"CUDA graph capture failed, stepping eagerly from now on: {error}")
                self._cuda_graphs = None
                return None
            graph.key = key
            self._graph = graph
        frames, sample, latents = graph(embedding, generator)
        self.graph_steps += 1
        slots = torch.zeros(batch, 1, producing.shape[-1], device=self.device)
        clean = sample[:, 0].clone()
        return RolloutState(latents.clone(), slots, frames.clone(), state.num_steps + 1, state.cache,
                            embodiment=spec.name, frame_latents=clean, task=state.task)

    def quantize(self, mode: str = "int8") -> None:
        """Quantizes for CPU inference, in place.

        ``"int8"``: the transformer's block linear layers (:func:`~worldsim.models.quantization.quantize_transformer_`,
        PyTorch dynamic int8 quantization). ``"int8+decoder"``: those, and the light decoder's convolutions in static
        int8 (:func:`~worldsim.models.quantization.quantize_decoder_`), calibrated on the latents of the model's real
        start frames; the light decoder must be the one in use (:meth:`set_decoder`).

        Several times faster matmuls and convolutions on CPUs with int8 dot-product instructions and no bf16 matrix
        unit, at a small cost in fidelity (docs/benchmarks.md, "Int8 transformer"). A quantized pipeline cannot be
        saved.

        Raises:
            ValueError: an unknown mode, a pipeline not on the CPU, or ``"int8+decoder"`` without the light decoder
                in use or without start frames to calibrate on; nothing changes.
            RuntimeError: already quantized.
        """
        from worldsim.models.quantization import QUANTIZATION_MODES, quantize_decoder_, quantize_transformer_

        if mode not in QUANTIZATION_MODES:
            raise ValueError(f"quantization mode must be one of {QUANTIZATION_MODES}, got {mode!r}")
        if self.quantization is not None:
            raise RuntimeError(f"the pipeline is already quantized ({self.quantization})")
        if self.device.type != "cpu":
            raise ValueError(f"int8 quantization runs on the CPU only; the pipeline is on {self.device}")
        calibration = None
        if mode == "int8+decoder":
            if self.decoder_name != "light":
                raise ValueError("int8+decoder quantizes the light decoder, but the autoencoder's decoder is in use; "
                                 "call set_decoder('light') (--decoder light) first")
            if self.start_frames is None:
                raise ValueError("int8+decoder calibrates on the model's start frames, and this model has none")
            frames = torch.as_tensor(self.start_frames["frames"])
            calibration = encode_frames(self.autoencoder, frames.reshape(-1, *frames.shape[-3:]).to(self.device))
        quantize_transformer_(self.transformer, "int8")
        if calibration is not None:
            quantize_decoder_(self.decoder, calibration)
        self.quantization = mode

    @property
    def decoder_name(self) -> str:
        """``"light"`` or ``"full"``: what :meth:`set_decoder` picked."""
        return "light" if self.frame_decoder is self.decoder and self.decoder is not None else "full"

    def heads_for(self, embodiment: str | None = None) -> OutcomeHeads | None:
        """The outcome heads trained for ``embodiment`` (default: the model's), else heads trained for any
        embodiment, else None.

        Raises:
            ValueError: an embodiment the model does not know.
        """
        name = self.embodiment(embodiment).name
        return self.outcome_heads.get(name, self.outcome_heads.get(None))

    @torch.no_grad()
    def outcomes(self, frames: torch.Tensor | np.ndarray | None, embodiment: str | None = None,
                 latents: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        """Reward, termination and success predicted by the outcome heads for frames (real or imagined).

        Args:
            frames: `(B, H, W, 3)` uint8 at the model's ``image_size``; encoded by the autoencoder first.
            embodiment: whose frames these are (default: the model's).
            latents: `(B, C, h, w)` float32 normalised latents to read instead of encoding ``frames`` (an imagined
                frame's :attr:`RolloutState.frame_latents`, the latent its pixels were decoded from).

        Returns:
            ``{"reward", "termination_probability", "success_probability", "value"}`` (the probabilities only for
            heads trained with positive examples, ``value`` only for heads trained with a discount), each `(B,)`
            float32 numpy.

        Raises:
            RuntimeError: the pipeline has no outcome heads for this embodiment (train them with
                ``worldsim train-heads``).
            ValueError: neither frames nor latents, or latents of the wrong shape.
        """
        heads = self.heads_for(embodiment)
        if heads is None:
            raise RuntimeError(f"this model has no outcome heads for {self.embodiment(embodiment).name!r}; train "
                               f"them with `worldsim train-heads`")
        if latents is not None:
            expected = (self.transformer.config.in_channels, *self.transformer.latent_size)
            if latents.ndim != 4 or tuple(latents.shape[1:]) != expected:
                raise ValueError(f"latents have shape {tuple(latents.shape)}, expected (B, {', '.join(map(str, expected))})")
        elif frames is None:
            raise ValueError("outcomes needs frames or latents")
        else:
            frames = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.asarray(frames))
            with self._fp32():
                latents = encode_frames(self.autoencoder, frames.to(self.device))
        return {name: value.cpu().numpy() for name, value in heads.predict(latents.float()).items()}

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def window_size(self) -> int:
        return int(self.metadata["window_size"])

    @property
    def image_size(self) -> int | tuple[int, int]:
        """The frame size the model imagines: an int for square frames, else ``(height, width)`` (see
        :attr:`frame_size`)."""
        height, width = self.frame_size
        return height if height == width else (height, width)

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(height, width)`` of the frames the model imagines, pixels (several camera views side by side make a
        frame wider than it is high; :attr:`camera_keys`)."""
        return size_pair(self.metadata["image_size"], "image_size")

    @property
    def camera_keys(self) -> list[str]:
        """The dataset camera keys whose views sit side by side in each frame, left to right (one key, or
        ``["observation.image"]`` for models that name none)."""
        keys = self.metadata.get("camera_keys")
        if keys is None:  # a multi-embodiment model keeps them with each embodiment's entry
            keys = self.metadata.get("embodiments", {}).get(self.default_embodiment, {}).get("camera_keys")
        return list(keys or [OBS_IMAGE])

    @property
    def composed_cameras(self) -> list[str] | None:
        """The camera keys a dataset's views are composed from for this model
        (:func:`~worldsim.data.frame_cache.load_frame_cache`'s ``video_keys``): the model's cameras when it has
        several, else None (a single-camera model reads any dataset's one camera, whatever its key)."""
        keys = self.camera_keys
        return keys if len(keys) > 1 else None

    @property
    def local_attn_size(self) -> int:
        """Frames the cached path attends to (the new one included); default: the training window."""
        return int(self.metadata.get("local_attn_size", self.window_size))

    @property
    def sink_size(self) -> int:
        """First frames the cached path keeps for ever (attention sinks); default 0."""
        return int(self.metadata.get("sink_size", 0))

    @property
    def frames_per_latent(self) -> int:
        """Video frames (and actions) per latent frame: 1 for a per-frame autoencoder; ``k`` (4 for Wan 2.1's VAE)
        for a model trained on a time-compressing video VAE (``train.temporal_compression``). Then every
        :meth:`step` takes ``k`` actions and imagines ``k`` frames, decoded through the VAE's temporal cache."""
        return int(self.metadata.get("frames_per_latent", 1))

    def require_per_frame(self, what: str) -> None:
        """Refuses ``what`` (a tool that reads one latent per video frame) for a time-compressed model.

        Raises:
            ValueError: :attr:`frames_per_latent` ``> 1``; the message names ``what``.
        """
        if self.frames_per_latent != 1:
            raise ValueError(f"{what} reads one latent frame per video frame; this model's latent frames each hold "
                             f"{self.frames_per_latent} video frames (trained with train.temporal_compression), "
                             f"which it does not support yet")

    @property
    def action_dim(self) -> int:
        """Flat action size of the default embodiment."""
        return self.embodiments[self.default_embodiment].action_dim

    def embodiment(self, name: str | None = None) -> Embodiment:
        """The embodiment called ``name`` (None: the default one).

        Raises:
            ValueError: unknown name (the message lists the known ones).
        """
        name = self.default_embodiment if name is None else name
        if name not in self.embodiments:
            raise ValueError(f"unknown embodiment {name!r}; this model knows {sorted(self.embodiments)}")
        return self.embodiments[name]

    def start_set(self, name: str | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The bundled start clips of an embodiment: frames `(K, n, H, W, 3)` uint8, actions `(K, n - 1, A)`."""
        spec = self.embodiment(name)
        if self.start_frames is None:
            return None
        for prefix in (f"{spec.name}.", "") if spec.name == self.default_embodiment else (f"{spec.name}.",):
            if f"{prefix}frames" in self.start_frames:
                return self.start_frames[f"{prefix}frames"], self.start_frames[f"{prefix}action"]
        return None

    def start_extras(self, name: str | None = None) -> dict[str, torch.Tensor]:
        """What the bundled start clips of an embodiment record besides frames and actions: ``"state"`` `(K, n, S)`
        float32 (each frame's ``observation.state``) and ``"task"`` `(K,)` long (task indices), where present."""
        spec = self.embodiment(name)
        if self.start_frames is None:
            return {}
        for prefix in (f"{spec.name}.", "") if spec.name == self.default_embodiment else (f"{spec.name}.",):
            if f"{prefix}frames" in self.start_frames:
                return {key: self.start_frames[f"{prefix}{key}"] for key in ("state", "task")
                        if f"{prefix}{key}" in self.start_frames}
        return {}

    def set_start_set(self, frames: torch.Tensor | np.ndarray, action: torch.Tensor | np.ndarray,
                      embodiment: str | None = None, state=None, task=None) -> None:
        """Replaces an embodiment's bundled start clips (what ``reset()`` without a context draws from; saved with the
        pipeline).

        Args:
            frames: `(K, n, H, W, 3)` uint8 at the model's frame size, K >= 1, n >= 1.
            action: `(K, n - 1, A)` float32 env-unit actions between them (the embodiment's flat layout).
            embodiment: whose clips these are (default: the model's).
            state: `(K, n, S)` float32, each frame's ``observation.state``, or None (the clips record none).
            task: `(K,)` long task indices of a task-conditioned model, or None.

        Raises:
            ValueError: shapes, dtype or frame size other than those, or a clip length other than ``1 + k m`` for a
                model of ``k =`` :attr:`frames_per_latent` ``> 1``; nothing changes.
        """
        spec = self.embodiment(embodiment)
        frames, action = torch.as_tensor(np.asarray(frames)), torch.as_tensor(np.asarray(action, dtype=np.float32))
        if frames.dtype != torch.uint8 or frames.ndim != 5 or tuple(frames.shape[2:]) != (*self.frame_size, 3):
            raise ValueError(f"start frames must be uint8 (K, n, {self.frame_size[0]}, {self.frame_size[1]}, 3), got "
                             f"{frames.dtype} {tuple(frames.shape)}")
        if len(frames) < 1 or tuple(action.shape) != (len(frames), frames.shape[1] - 1, spec.action_dim):
            raise ValueError(f"start actions have shape {tuple(action.shape)}, expected "
                             f"{(len(frames), frames.shape[1] - 1, spec.action_dim)}")
        if (frames.shape[1] - 1) % self.frames_per_latent:
            raise ValueError(f"start clips of {frames.shape[1]} frames do not fit a model of {self.frames_per_latent} "
                             f"frames per latent frame: it takes 1 + {self.frames_per_latent} m")
        extras = {}
        if state is not None:
            extras["state"] = torch.as_tensor(np.asarray(state, dtype=np.float32))
            if extras["state"].ndim != 3 or tuple(extras["state"].shape[:2]) != tuple(frames.shape[:2]):
                raise ValueError(f"start states have shape {tuple(extras['state'].shape)}, expected "
                                 f"({len(frames)}, {frames.shape[1]}, S)")
        if task is not None:
            extras["task"] = torch.as_tensor(np.asarray(task, dtype=np.int64))
            if tuple(extras["task"].shape) != (len(frames),):
                raise ValueError(f"start tasks have shape {tuple(extras['task'].shape)}, expected ({len(frames)},)")
            self.task_ids(extras["task"], len(frames))  # indices outside the model's tasks fail here
        prefix = f"{spec.name}." if "embodiments" in self.metadata else ""
        self.start_frames = dict(self.start_frames or {})
        self.start_frames[f"{prefix}frames"], self.start_frames[f"{prefix}action"] = frames.contiguous(), action.contiguous()
        for key in ("state", "task"):
            self.start_frames.pop(f"{prefix}{key}", None)
            if key in extras:
                self.start_frames[f"{prefix}{key}"] = extras[key].contiguous()

    def _normalize(self, spec: Embodiment, action: np.ndarray) -> torch.Tensor:
        """Env-unit flat actions `(..., A_e)` -> normalised `(..., A_model)` float32, zero-padded. With ``k =``
        :attr:`frames_per_latent` ``> 1``, `(..., k, A_e)` -> `(..., A_model)`: each action normalised and padded to
        ``A_model / k``, then the ``k`` concatenated in time order (the grouped action of one latent frame)."""
        normalized = torch.from_numpy(spec.normalizer.normalize(action)).to(self.device)
        group = self.frames_per_latent
        pad = self.transformer.config.action_dim // group - spec.action_dim
        normalized = torch.nn.functional.pad(normalized, (0, pad)) if pad else normalized
        return normalized.flatten(-2) if group > 1 else normalized

    def task_ids(self, task, batch: int) -> torch.Tensor | None:
        """`(B,)` long task indices of the transformer (:meth:`~worldsim.models.WorldModelTransformer.task_index`)
        for a task given as None (the null task), one text for every rollout, B texts, or B indices; None for a model
        without task conditioning given no task.

        Raises:
            ValueError: a task for a model without task conditioning, an unknown task text (the message lists the
                known ones), or a count or index that does not fit.
        """
        transformer = self.transformer
        if transformer.task_embedder is None:
            if task is not None:
                raise ValueError(f"this model is not conditioned on a task, but task {task!r} was given")
            return None
        if task is None or isinstance(task, str):
            return torch.full((batch,), transformer.task_index(task), dtype=torch.long, device=self.device)
        if isinstance(task, (list, tuple)) and all(isinstance(t, str) or t is None for t in task):
            ids = [transformer.task_index(t) for t in task]
        else:
            ids = np.asarray(task.cpu() if isinstance(task, torch.Tensor) else task).reshape(-1).tolist()
            null = transformer.task_embedder.null_index
            if any(not isinstance(i, int) or not 0 <= i <= null for i in ids):
                raise ValueError(f"task indices must be ints in [0, {null}] ({null}: the null task), got {ids}")
        if len(ids) != batch:
            raise ValueError(f"got {len(ids)} tasks for {batch} rollouts")
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def state_predictor_for(self, embodiment: str | None = None):
        """The :class:`~worldsim.models.state.StatePredictor` of an embodiment (default: the model's), or None."""
        return self.state_predictors.get(self.embodiment(embodiment).name)

    def _next_observation_state(self, spec: Embodiment, latents: torch.Tensor, state: RolloutState,
                                action: torch.Tensor):
        """The new frame's predicted ``observation.state`` `(B, S)`, or None when the rollouts carry none; ``action``
        `(B, A)` env units is the one that produced the frame (read by a predictor with ``action_dim > 0``)."""
        if state.observation_state is None:
            return None
        predictor = self.state_predictors.get(spec.name)
        if predictor is None:
            raise RuntimeError(f"the rollouts carry observation.state but the model has no state predictor for "
                               f"{spec.name!r}; train one with `worldsim train-state`")
        with self._fp32():
            return predictor.predict(latents.float(), state.observation_state.to(latents.device),
                                     action if predictor.action_dim else None).float()

    def _ids(self, spec: Embodiment, batch: int) -> torch.Tensor | None:
        return None if spec.index is None else torch.full((batch,), spec.index, dtype=torch.long, device=self.device)

    def _cache_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.metadata.get("bf16", True) else torch.float32

    def _fp32(self):
        return torch.autocast(self.device.type, enabled=False)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.metadata.get("bf16", True))

    # ------------------------------------------------------------------ the loop
    def sampler_settings(self, **overrides):
        """The model's default :class:`~worldsim.pipelines.sampler.SamplerSettings` with ``overrides`` (any of
        its fields; None keeps the default). Raises ValueError on a bad setting."""
        from worldsim.pipelines.sampler import SamplerSettings

        return SamplerSettings.resolve(self, **overrides)

    def resolve_sampler(self, num_inference_steps: int | None = None, timestep_spacing: str | None = None) -> dict:
        """The sampler that :meth:`set_timesteps` would set, with the model's defaults filled in (for reports).

        Args:
            num_inference_steps: denoising steps per frame, >= 1; ``None``: the model's ``num_inference_steps``
                (10 when the model names none).
            timestep_spacing: ``"linspace"`` or ``"trailing"`` (see :meth:`set_timesteps`); ``None``: the model's
                ``timestep_spacing``, else ``"linspace"``.

        Returns:
            ``{"num_inference_steps": int, "timestep_spacing": str}``.

        Raises:
            ValueError: ``num_inference_steps < 1`` or an unknown spacing.
        """
        spacing = timestep_spacing or self.metadata.get("timestep_spacing", "linspace")
        if num_inference_steps is None:
            num_inference_steps = int(self.metadata.get("num_inference_steps", 10))
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if spacing not in ("linspace", "trailing"):
            raise ValueError(f"timestep_spacing must be 'linspace' or 'trailing', got {spacing!r}")
        return {"num_inference_steps": int(num_inference_steps), "timestep_spacing": spacing}

    def set_timesteps(self, num_inference_steps: int | None = None, timestep_spacing: str | None = None
                      ) -> torch.Tensor:
        """Sets the scheduler's timesteps for one frame's denoising loop and returns them.

        Args:
            num_inference_steps: denoising steps per frame, >= 1; ``None``: the model's ``num_inference_steps``
                (10 when the model names none).
            timestep_spacing: ``"linspace"`` (diffusers' default for flow matching: sigmas from 1 to 1/1000, so with
                2 steps the second one barely moves) or ``"trailing"`` (sigmas ``1, (n-1)/n, ..., 1/n`` then 0: every
                step covers an equal share of the path; Lin et al. 2024, "Common diffusion noise schedules and sample
                steps are flawed"). Default: the model's ``timestep_spacing``, else ``"linspace"``.

        Returns:
            `(num_inference_steps,)` float timesteps (``sigma * 1000``).

        Raises:
            ValueError: ``num_inference_steps < 1`` or an unknown spacing.
        """
        sampler = self.resolve_sampler(num_inference_steps, timestep_spacing)
        steps = sampler["num_inference_steps"]
        self._timesteps_key = (steps, sampler["timestep_spacing"])  # what a captured CUDA graph step was made for
        if sampler["timestep_spacing"] == "linspace":
            self.scheduler.set_timesteps(steps, device=self.device)
        else:  # trailing
            self.scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1], device=self.device)
        return self.scheduler.timesteps

    def _noise_history(self, latents: torch.Tensor, context_noise: float, generator) -> torch.Tensor:
        if context_noise == 0:
            return latents
        noise = randn_tensor(latents.shape, generator=generator, dtype=latents.dtype).to(latents.device)
        return (1.0 - context_noise) * latents + context_noise * noise

    @torch.no_grad()
    def encode_context(self, frames: torch.Tensor | np.ndarray, action: torch.Tensor | np.ndarray,
                       context_noise: float | None = None, generator: torch.Generator | None = None,
                       use_cache: bool = True, embodiment: str | None = None, task=None,
                       observation_state=None) -> RolloutState:
        """Starts rollouts from real context.

        Args:
            frames: `(B, n, H, W, 3)` uint8, ``n >= 1`` context frames at the model's ``image_size``; for a model
                with ``k =`` :attr:`frames_per_latent` ``> 1``, ``n = 1 + k m`` (encoded as one clip by the video
                VAE: the first frame alone, then ``m`` latent frames of ``k``).
            action: `(B, n - 1, A)` float32 in env units, the actions between the frames.
            context_noise: noise level (sigma in [0, 1)) of history latents; default: the model's.
            generator: torch RNG for the context noise, or a list of B, one per rollout (diffusers'
                ``randn_tensor`` convention: row b's noise then depends on ``generator[b]`` alone).
            use_cache: encode the context into a KV cache (the streaming path) instead of keeping latents for full
                recomputation.
            embodiment: whose actions these are (multi-embodiment models); default: the model's default.
            task: what the rollouts imagine, for a task-conditioned model (:meth:`task_ids`): a task text for all,
                B texts, or `(B,)` task indices; None: the null task. Must be None for a model without tasks.
            observation_state: `(B, S)` float32 env units, the last context frame's ``observation.state``, which the
                embodiment's state predictor carries forward at every step (None: no state is predicted).

        Returns:
            :class:`RolloutState` holding the last ``window_size - 1`` context frames (cached path: the last
            ``sink_size + local_attn_size - 1``); latent frames when ``k > 1``.

        Raises:
            ValueError: wrong shapes, dtype or frame size, or a generator list whose length is not B; the message
                names the value and what was expected.
        """
        frames = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.array(frames))
        action = torch.as_tensor(np.asarray(action, dtype=np.float32) if not isinstance(action, torch.Tensor) else action)
        task_ids = self.task_ids(task, len(frames)) if frames.ndim == 5 else None
        if observation_state is not None:
            observation_state = torch.as_tensor(np.asarray(observation_state, dtype=np.float32))
            if observation_state.ndim != 2 or observation_state.shape[0] != len(frames) or \
                    not torch.isfinite(observation_state).all():
                raise ValueError(f"observation_state must be finite ({len(frames)}, S) float32, got "
                                 f"{tuple(observation_state.shape)}")
        if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"context frames must be uint8 (B, n, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        if tuple(frames.shape[2:4]) != self.frame_size:
            raise ValueError(f"context frames are {tuple(frames.shape[2:4])} (height, width), the model expects "
                             f"{self.frame_size}")
        batch, num_context = frames.shape[:2]
        spec = self.embodiment(embodiment)
        if action.shape != (batch, num_context - 1, spec.action_dim):
            raise ValueError(f"context action has shape {tuple(action.shape)}, expected "
                             f"{(batch, num_context - 1, spec.action_dim)} (one action between each pair of frames)")
        context_noise = self.metadata.get("context_noise", 0.0) if context_noise is None else context_noise
        check_generator(generator, batch)
        capacity = self.sink_size + self.local_attn_size - 1 if use_cache else self.window_size - 1
        newest, decoder_cache, group = frames[:, -1].clone(), None, self.frames_per_latent
        if group > 1:  # the clip through the video VAE at once (causal), then the last latent frames kept
            if (num_context - 1) % group:
                raise ValueError(f"this model's latent frames each hold {group} video frames: context must be "
                                 f"1 + {group} m frames (the first alone, then groups of {group}), got {num_context}")
            latents = encode_video(self.autoencoder, frames.to(self.device))
            decoder_cache = VideoDecoderCache(self.autoencoder)
            decoder_cache.decode(latents)  # the VAE decoder's temporal cache now holds the context
            normalized = self._normalize(spec, action.numpy().reshape(batch, -1, group, spec.action_dim))
            keep = min(latents.shape[1], capacity)
            latents = latents[:, -keep:]
            normalized = normalized[:, normalized.shape[1] - (keep - 1):] if keep > 1 else normalized[:, :0]
        else:
            keep = min(num_context, capacity)
            frames, action = frames[:, -keep:], action[:, action.shape[1] - (keep - 1):] if keep > 1 else action[:, :0]
            latents = encode_frames(self.autoencoder, frames.to(self.device))
            normalized = self._normalize(spec, action.numpy())
        width = normalized.shape[-1]
        # one slot per history frame; the slot of the newest frame is filled by the next step's action
        slots = torch.cat([normalized, torch.zeros(batch, 1, width, device=self.device)], dim=1)
        latents = self._noise_history(latents, context_noise, generator)
        if not use_cache:
            return RolloutState(latents, slots, newest, embodiment=spec.name, task=task_ids,
                                observation_state=observation_state, decoder_cache=decoder_cache)
        cache = self.transformer.new_cache(batch, self.local_attn_size, self.sink_size, dtype=self._cache_dtype())
        # frame i was produced by action i - 1; the first context frame has no producing action (null embedding)
        producing = torch.cat([torch.zeros(batch, 1, width, device=self.device), normalized], dim=1)
        mask = torch.ones(batch, keep, dtype=torch.bool, device=self.device)
        mask[:, 0] = False
        timestep = torch.full((batch, keep), context_noise * 1000.0, device=self.device)
        with self._autocast():
            self.transformer.forward_cached(latents, timestep, producing, mask, cache, update_cache=True,
                                            embodiment=self._ids(spec, batch), return_output=False, task=task_ids)
        return RolloutState(latents[:, -1:], slots[:, -1:], newest, cache=cache, embodiment=spec.name,
                            task=task_ids, observation_state=observation_state, decoder_cache=decoder_cache)

    @torch.no_grad()
    def step_with_disagreement(self, state: RolloutState, action: torch.Tensor | np.ndarray, num_samples: int,
                               num_inference_steps: int | None = None, context_noise: float | None = None,
                               generator: torch.Generator | None = None,
                               action_guidance_scale: float | None = None,
                               timestep_spacing: str | None = None) -> tuple[RolloutState, np.ndarray]:
        """:meth:`step`, imagined ``num_samples`` times from the same state, with how much the samples disagree.

        Every rollout is branched into ``num_samples`` copies (its KV cache copied), all copies take the same
        action with different noise in one batch, and the first copy carries on. The disagreement is the mean over
        pixels of the standard deviation across copies, in [0, 1] units of the pixel range: near 0 where the model
        is sure of the next frame, larger where it hesitates (an epistemic warning light for imagined values, in
        the spirit of ensemble disagreement in model-based RL).

        Args:
            state, action, num_inference_steps, context_noise, generator, action_guidance_scale, timestep_spacing:
                as :meth:`step` (cached-path state).
            num_samples: copies per rollout, >= 2.

        Returns:
            (the new state of batch B, disagreement `(B,)` float32).

        Raises:
            ValueError: ``num_samples < 2``, a non-cached or stale state, or a bad action (as :meth:`step`); the
                state is left unchanged.
        """
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 to measure disagreement, got {num_samples}")
        if state.cache is None:
            raise ValueError("step_with_disagreement needs a cached-path state")
        if state.is_stale:
            raise ValueError("this rollout state was already stepped; use the newest state")
        batch = state.batch_size
        action = torch.as_tensor(np.asarray(action, dtype=np.float32) if not isinstance(action, torch.Tensor) else action)
        if action.ndim < 1 or action.shape[0] != batch:
            raise ValueError(f"action has shape {tuple(action.shape)}, expected ({batch}, A)"
                             + (f" or ({batch}, {self.frames_per_latent}, A)" if self.frames_per_latent > 1 else ""))
        check_generator(generator, batch)
        copies = torch.arange(batch).repeat_interleave(num_samples)
        if isinstance(generator, list):  # the copies of rollout b draw from generator b, one after the other
            generator = [generator[index] for index in copies.tolist()]
        expanded = state.select(copies)
        stepped = self.step(expanded, action[copies], num_inference_steps, context_noise, generator,
                            action_guidance_scale, timestep_spacing)
        frames = stepped.frames.view(batch, num_samples, *stepped.frames.shape[1:]).float()
        disagreement = (frames.std(dim=1).mean(dim=(1, 2, 3)) / 255.0).cpu().numpy().astype(np.float32)
        first = torch.arange(batch) * num_samples
        carried = stepped.select(first)
        return carried, disagreement

    @torch.no_grad()
    def restart(self, state: RolloutState, rows, frames: torch.Tensor | np.ndarray, action: torch.Tensor | np.ndarray,
                context_noise: float | None = None, generator: torch.Generator | None = None, task=None,
                observation_state=None) -> RolloutState:
        """Restarts some rollouts of a batch from new real context, leaving the others as they are.

        The new contexts are encoded as by :meth:`encode_context` and spliced into the batch's KV cache
        (:meth:`~worldsim.models.kv_cache.FrameKVCache.splice`): their frames are right-aligned and the slots
        before them masked, so the restarted rows see exactly their own history. This is what lets a vector env
        reset one sub-env without touching the others.

        Args:
            state: a cached-path state of batch B (not stale).
            rows: `(R,)` distinct row indices in ``[0, B)``.
            frames: `(R, n, H, W, 3)` uint8 context frames.
            action: `(R, n - 1, A)` float32 env-unit actions between them.
            context_noise, generator: as :meth:`encode_context` (a generator list has one entry per restarted row).
            task, observation_state: the restarted rows' tasks and last context states, as :meth:`encode_context`
                (R of them); a state that carries observation states needs them.

        Returns:
            A new :class:`RolloutState` of batch B (``state`` becomes stale).

        Raises:
            ValueError: ``state`` is stale or not on the cached path, bad rows, or bad context (as
                :meth:`encode_context`); ``state`` is left unchanged.
        """
        if state.cache is None:
            raise ValueError("restart needs a cached-path state (encode_context(..., use_cache=True))")
        if state.is_stale:
            raise ValueError("this rollout state was already stepped; restart the newest state")
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        if rows.ndim != 1 or len(set(rows.tolist())) != len(rows) or (len(rows) and (
                rows.min() < 0 or rows.max() >= state.batch_size)):
            raise ValueError(f"rows must be distinct indices in [0, {state.batch_size}), got {rows.tolist()}")
        if len(frames) != len(rows):
            raise ValueError(f"got {len(frames)} contexts for {len(rows)} rows")
        if (state.observation_state is None) != (observation_state is None):
            raise ValueError("restart needs observation_state exactly when the rollouts carry observation states")
        fresh = self.encode_context(frames, action, context_noise, generator, embodiment=state.embodiment, task=task,
                                    observation_state=observation_state)
        state.cache.splice(rows, fresh.cache)
        if state.decoder_cache is not None:
            state.decoder_cache.splice(rows, fresh.decoder_cache)
        latents, slots, newest = state.latents.clone(), state.action.clone(), state.frames.clone()
        latents[rows], slots[rows], newest[rows] = fresh.latents, fresh.action, fresh.frames.to(newest.device)
        tasks, observed = state.task, state.observation_state
        if tasks is not None:
            tasks = tasks.clone()
            tasks[rows] = fresh.task.to(tasks.device)
        if observed is not None:
            observed = observed.clone()
            observed[rows] = fresh.observation_state.to(observed.device)
        chunks = state.chunk_frames
        if chunks is not None:  # a restarted row shows its last context frame until its first step
            chunks = chunks.clone()
            chunks[rows] = newest[rows, None].to(chunks.device)
        return RolloutState(latents, slots, newest, state.num_steps, state.cache, embodiment=state.embodiment,
                            task=tasks, observation_state=observed, decoder_cache=state.decoder_cache,
                            chunk_frames=chunks)

    @torch.no_grad()
    def step(self, state: RolloutState, action: torch.Tensor | np.ndarray, num_inference_steps: int | None = None,
             context_noise: float | None = None, generator: torch.Generator | None = None,
             action_guidance_scale: float | None = None, timestep_spacing: str | None = None) -> RolloutState:
        """Imagines the next frame of every rollout in ``state``.

        Args:
            state: from :meth:`encode_context` or a previous :meth:`step`.
            action: `(B, A)` float32 in env units, applied after the newest frame; for a model with ``k =``
                :attr:`frames_per_latent` ``> 1``, `(B, k, A)`: the ``k`` actions of the next latent frame in time
                order, one after each of its video frames.
            num_inference_steps: Euler steps per frame; default: the model's.
            context_noise: sigma of the finished frame when it joins the history; default: the model's.
            generator: torch RNG (the initial noise and the history noise), or a list of B, one per rollout (see
                :meth:`encode_context`).
            action_guidance_scale: classifier-free guidance on the action (Ho & Salimans 2022): the velocity is
                ``v_uncond + scale * (v_cond - v_uncond)``, where the unconditional branch drops the action that
                produces the new frame (null action embedding). 1.0 disables it (one forward pass per step
                instead of two); default: the model's.
            timestep_spacing: ``"linspace"`` or ``"trailing"``, see :meth:`set_timesteps`; default: the model's.

        Returns:
            A new :class:`RolloutState`; its ``frames`` `(B, H, W, 3)` uint8 is the imagined frame (with ``k > 1``
            the last of the ``k`` in ``chunk_frames``, decoded through the VAE's temporal cache). On the cached
            path ``state``'s caches are advanced in place and ``state`` becomes stale.

        Raises:
            ValueError: an action of the wrong shape, a generator list whose length is not B, a stale ``state``
                (already stepped; clone to branch), bad sampler settings, or a NaN / inf action for a state predictor
                that reads actions. The state is left unchanged.
            RuntimeError: rollouts that carry ``observation.state`` on a model without a state predictor for the
                embodiment (also left unchanged).
        """
        if action_guidance_scale is None:
            action_guidance_scale = float(self.metadata.get("action_guidance_scale", 1.0))
        context_noise = self.metadata.get("context_noise", 0.0) if context_noise is None else context_noise
        action = torch.as_tensor(np.asarray(action, dtype=np.float32) if not isinstance(action, torch.Tensor) else action)
        spec = self.embodiment(state.embodiment)
        group = self.frames_per_latent
        expected = (state.batch_size, spec.action_dim) if group == 1 else (state.batch_size, group, spec.action_dim)
        if action.shape != expected:
            raise ValueError(f"action has shape {tuple(action.shape)}, expected {expected}"
                             + (f" ({group} actions per step: each latent frame holds {group} video frames)"
                                if group > 1 else ""))
        check_generator(generator, state.batch_size)
        if state.is_stale:
            raise ValueError("this rollout state was already stepped and its KV cache has moved on; "
                             "call state.clone() before stepping to branch several futures from one state")
        if state.observation_state is not None:  # the state predictor's checks, before any cache moves
            predictor = self.state_predictors.get(spec.name)
            if predictor is None:
                raise RuntimeError(f"the rollouts carry observation.state but the model has no state predictor for "
                                   f"{spec.name!r}; train one with `worldsim train-state`")
            if predictor.action_dim and not torch.isfinite(action).all():
                raise ValueError(f"action holds NaN or inf ({action.tolist()}); the state predictor reads it")
        timesteps = self.set_timesteps(num_inference_steps or None, timestep_spacing)  # bad settings fail first
        history = state.action.clone()
        history[:, -1] = self._normalize(spec, action.numpy())
        # one autocast region for the whole step: weights are cast to bf16 once, not once per forward pass
        with self._autocast():
            if state.cache is not None:
                new = self._step_cached(state, history[:, -1], timesteps, context_noise, generator,
                                        action_guidance_scale, spec)
            else:
                new = self._step_full(state, history, timesteps, context_noise, generator, action_guidance_scale, spec)
        new.observation_state = self._next_observation_state(spec, new.frame_latents, state, action)
        return new

    def _step_full(self, state: RolloutState, history: torch.Tensor, timesteps: torch.Tensor,
                   context_noise: float, generator, action_guidance_scale: float,
                   spec: Embodiment) -> RolloutState:
        """:meth:`step` recomputing the whole history window at every denoising step."""
        batch, length = state.latents.shape[:2]
        width = history.shape[-1]
        window_action = torch.cat([history, torch.zeros(batch, 1, width, device=self.device)], dim=1)
        ids, tasks = self._ids(spec, batch), state.task
        history_timestep = torch.full((batch, length), context_noise * 1000.0, device=self.device)

        guided = action_guidance_scale != 1.0
        action_mask = None
        if guided:
            # unconditional branch: the same window with the new frame's producing action dropped
            action_mask = torch.ones(2 * batch, length + 1, dtype=torch.bool, device=self.device)
            action_mask[batch:, -1] = False
            window_action = window_action.repeat(2, 1, 1)
            ids = None if ids is None else ids.repeat(2)
            tasks = None if tasks is None else tasks.repeat(2)
            history_latents, history_timestep = state.latents.repeat(2, 1, 1, 1, 1), history_timestep.repeat(2, 1)
        else:
            history_latents = state.latents

        shape = (batch, 1, *state.latents.shape[2:])
        sample = randn_tensor(shape, generator=generator).to(self.device)
        for timestep in timesteps:
            current = sample.repeat(2, 1, 1, 1, 1) if guided else sample
            model_input = torch.cat([history_latents, current], dim=1)
            frame_timestep = torch.cat([history_timestep, timestep.expand(current.shape[0], 1).float()], dim=1)
            with self._autocast():
                model_output = self.transformer(model_input, frame_timestep, window_action, action_mask,
                                                embodiment=ids, task=tasks)[:, -1:].float()
            if guided:
                conditional, unconditional = model_output.chunk(2)
                model_output = unconditional + action_guidance_scale * (conditional - unconditional)
            sample = self.scheduler.step(model_output, timestep, sample).prev_sample
        # the full path may step one state twice: its VAE cache is copied, not advanced
        decoder_cache = None if state.decoder_cache is None else state.decoder_cache.select(torch.arange(batch))
        frames, chunk = self._decode_new(sample, decoder_cache)
        latents = torch.cat([state.latents, self._noise_history(sample, context_noise, generator)], dim=1)
        slots = torch.cat([history, torch.zeros(batch, 1, width, device=self.device)], dim=1)
        keep = self.window_size - 1
        return RolloutState(latents[:, -keep:], slots[:, -keep:], frames, state.num_steps + 1, embodiment=spec.name,
                            frame_latents=sample[:, 0], task=state.task,
                            decoder_cache=decoder_cache, chunk_frames=chunk)

    def _step_cached(self, state: RolloutState, producing: torch.Tensor, timesteps: torch.Tensor,
                     context_noise: float, generator, action_guidance_scale: float,
                     spec: Embodiment) -> RolloutState:
        """:meth:`step` on the cached path: the new frame attends to the cache, then is re-encoded into it."""
        batch = state.batch_size
        guided = action_guidance_scale != 1.0
        producing = producing[:, None]  # (B, 1, A)
        if self._cuda_graphs is not None and not guided:
            graphed = self._graphed_step(state, producing, context_noise, generator, spec)
            if graphed is not None:
                return graphed
        mask, ids, tasks = None, self._ids(spec, batch), state.task
        if guided:  # [conditional; unconditional] share the cache; the second drops the producing action
            producing = producing.repeat(2, 1, 1)
            ids = None if ids is None else ids.repeat(2)
            tasks = None if tasks is None else tasks.repeat(2)
            mask = torch.ones(2 * batch, 1, dtype=torch.bool, device=self.device)
            mask[batch:] = False
        sample = randn_tensor((batch, 1, *state.latents.shape[2:]), generator=generator).to(self.device)
        for timestep in timesteps:
            current = sample.repeat(2, 1, 1, 1, 1) if guided else sample
            frame_timestep = timestep.expand(current.shape[0], 1).float()
            with self._autocast():
                model_output = self.transformer.forward_cached(current, frame_timestep, producing, mask,
                                                               state.cache, embodiment=ids, task=tasks).float()
            if guided:
                conditional, unconditional = model_output.chunk(2)
                model_output = unconditional + action_guidance_scale * (conditional - unconditional)
            sample = self.scheduler.step(model_output, timestep, sample).prev_sample
        frames, chunk = self._decode_new(sample, state.decoder_cache)
        # re-encode the finished frame at the history noise level: one extra pass that writes its keys/values
        latents = self._noise_history(sample, context_noise, generator)
        with self._autocast():
            self.transformer.forward_cached(latents, torch.full((batch, 1), context_noise * 1000.0, device=self.device),
                                            producing[:batch], None, state.cache, update_cache=True,
                                            embodiment=self._ids(spec, batch), return_output=False, task=state.task)
        slots = torch.zeros(batch, 1, producing.shape[-1], device=self.device)
        return RolloutState(latents, slots, frames, state.num_steps + 1, state.cache, embodiment=spec.name,
                            frame_latents=sample[:, 0], task=state.task,
                            decoder_cache=state.decoder_cache, chunk_frames=chunk)

    def _decode_new(self, sample: torch.Tensor, decoder_cache: VideoDecoderCache | None):
        """The new latent frame `(B, 1, C, h, w)` in pixels: ``(frames (B, H, W, 3), chunk)`` uint8, ``chunk`` the
        `(B, k, H, W, 3)` video frames of a time-compressed latent (decoded through ``decoder_cache``, advanced in
        place), else None. Runs in the step's bf16 autocast region."""
        if decoder_cache is None:
            return decode_latents(self.frame_decoder, sample[:, 0]), None
        chunk = decoder_cache.decode(sample)
        return chunk[:, -1], chunk

    @torch.no_grad()
    def rollout(self, context_frames, context_action, action, num_inference_steps: int | None = None,
                context_noise: float | None = None, generator: torch.Generator | None = None,
                progress: bool = False, action_guidance_scale: float | None = None,
                use_cache: bool = True, embodiment: str | None = None,
                timestep_spacing: str | None = None,
                return_latents: bool = False, task=None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Open-loop rollout: imagines one frame per action.

        Args:
            context_frames: `(B, n, H, W, 3)` uint8 real frames.
            context_action: `(B, n - 1, A)` actions between them, env units.
            action: `(B, S, A)` actions to apply after the last context frame, env units.
            num_inference_steps, context_noise, generator, action_guidance_scale, timestep_spacing: see :meth:`step`.
            progress: show a progress bar over the S steps.
            use_cache: stream through a KV cache (default) or recompute the history window at every step.
            embodiment: whose actions these are; default: the model's default embodiment.
            return_latents: also return the latent each frame was decoded from (what the env's outcome heads read,
                :attr:`RolloutState.frame_latents`).
            task: what a task-conditioned model imagines (see :meth:`encode_context`).

        Returns:
            `np.ndarray` `(B, S, H, W, 3)` uint8: frame s is the result of ``action[:, s]``; with ``return_latents``
            the tuple ``(frames, latents)``, latents `(B, S / k, C, h, w)` float32 (normalised, as the transformer
            sees them; ``k =`` :attr:`frames_per_latent`, whose models take ``S`` a multiple of ``k``).
        """
        action = np.asarray(action, dtype=np.float32)
        if action.ndim != 3:
            raise ValueError(f"action must be (B, S, A), got shape {action.shape}")
        group = self.frames_per_latent
        if action.shape[1] % group:
            raise ValueError(f"this model imagines {group} frames per latent frame: the number of actions must be a "
                             f"multiple of {group}, got {action.shape[1]}")
        if group > 1:  # (B, S / k, k, A): one step per latent frame
            action = action.reshape(action.shape[0], action.shape[1] // group, group, action.shape[2])
        state = self.encode_context(context_frames, context_action, context_noise, generator, use_cache, embodiment,
                                    task=task)
        frames, latents = [], []
        for s in tqdm(range(action.shape[1]), desc="imagining", unit="frame" if group == 1 else "latent frame",
                      disable=not progress):
            state = self.step(state, action[:, s], num_inference_steps, context_noise, generator, action_guidance_scale,
                              timestep_spacing)
            frames.append(state.frames[:, None].cpu().numpy() if group == 1 else state.chunk_frames.cpu().numpy())
            if return_latents:
                latents.append(state.frame_latents.float().cpu().numpy())
        if return_latents:
            return np.concatenate(frames, axis=1), np.stack(latents, axis=1)
        return np.concatenate(frames, axis=1)
