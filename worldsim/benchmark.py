"""``worldsim bench``: how fast imagination is, measured in one run on one machine, against the physics it replaces.

One command measures, with the same model and sampler:

* imagined env steps per second: the single env (``gym.make("worldsim/WorldModel-v0")``) and the native vector env
  (``gym.make_vec(..., vectorization_mode="vector_entry_point")``) at each ``num_envs``;
* the real env's steps per second with pixel observations (the model's embodiment, made by its plug-in), in the same
  process, and the ratio imagined / real;
* the single env's per-frame latency (median and p95);
* achieved FLOP/s of inference (at the largest ``num_envs``) and of training, over the bf16 matmul peak measured
  on the same machine in the same run: the fraction of the physical limit reached. FLOPs are counted from the
  config (:func:`~worldsim.utils.measure.transformer_flops`) and, as a cross-check, by torch's ``FlopCounterMode`` on
  a real step;
* training samples per second (forward, backward and AdamW in bf16 autocast, the training loss of
  :func:`~worldsim.training.train_world_model.flow_matching_loss`);
* peak resident memory of single-env rollouts of 200 and 2,000 steps, each in a fresh process.

It writes a JSON report and a markdown section (machine, date, command, table) into ``docs/benchmarks.md``.

This module is the app; the measuring tools it is built on (rates, latencies, FLOPs, the matmul peak, memory, the
markdown markers) are :mod:`worldsim.utils.measure`, which tools and other modules import without importing this one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from worldsim.models.quantization import QUANTIZATION_LABELS
from worldsim.utils.measure import (count_flops, json_from_fresh_process, latency_ms, machine_description, matmul_peak,
                                    peak_resident_mib, steps_per_second, synchronize, transformer_flops)


# ---------------------------------------------------------------------------------------------------- env speed
def real_env_steps_per_second(plugin, seconds: float, seed: int = 0) -> dict:
    """Steps per second of an embodiment's real env with pixel observations (:meth:`~worldsim.embodiments.
    EmbodimentPlugin.make_env`: physics and rendering), uniformly random actions, reset when an episode ends.

    Returns:
        ``{"steps_per_second", "steps", "env_id", "observation_shape"}`` (the frame's `(H, W, 3)`).

    Raises:
        ImportError: the env's package is not installed (the message names the extra).
    """
    from worldsim.data.collect import _pixels

    env = plugin.make_env()
    observation, _ = env.reset(seed=seed)
    shape = _pixels(observation, env).shape
    env.action_space.seed(seed)

    def step():
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
        return 1

    rate, count = steps_per_second(step, seconds)
    env.close()
    return {"steps_per_second": rate, "steps": count, "env_id": plugin.default_env_id, "observation_shape": list(shape)}


def _env_kwargs(settings: dict) -> dict:
    return {key: settings[key] for key in ("num_inference_steps", "timestep_spacing", "decoder")
            if settings.get(key) is not None}


def single_env_speed(pipeline, settings: dict, seconds: float, latency_steps: int, seed: int = 0) -> dict:
    """Steps per second and per-frame latency of ``gym.make("worldsim/WorldModel-v0")`` with random actions.

    Args:
        pipeline: a loaded :class:`~worldsim.pipelines.WorldModelPipeline`.
        settings: ``{"num_inference_steps": int, "timestep_spacing": str, "decoder": "full" | "light"}`` (missing
            keys: the model's defaults).
        seconds: throughput timing length (wall-clock seconds, after 2 warm-up steps).
        latency_steps: steps then timed one by one (0: no latency figures).

    Returns:
        ``{"steps_per_second", "steps", "latency_steps", "latency_ms_median", "latency_ms_p95"}`` (milliseconds;
        None without latency steps).

    Raises:
        ValueError: bad sampler settings (from the env).
    """
    import gymnasium as gym

    env = gym.make("worldsim/WorldModel-v0", model=pipeline, **_env_kwargs(settings))
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high

    def step():
        env.step(rng.uniform(low, high).astype(np.float32))
        return 1

    rate, count = steps_per_second(step, seconds)
    latency = latency_ms(step, latency_steps)
    return {"steps_per_second": rate, "steps": count, "latency_steps": latency_steps,
            "latency_ms_median": latency["median"], "latency_ms_p95": latency["p95"]}


def vector_env_speed(pipeline, num_envs: int, settings: dict, seconds: float, seed: int = 0,
                     flops: bool = False) -> dict:
    """Sub-env steps per second of the native vector env with ``num_envs`` sub-envs (random actions).

    The KV cache is filled first (``local_attn_size`` steps), then steps are timed for ``seconds``. With ``flops``
    the FLOPs of one more step are counted (:func:`~worldsim.utils.measure.count_flops`), giving the achieved FLOP/s.

    Returns:
        ``{"num_envs", "steps_per_second", "steps"}`` plus, with ``flops``, ``"flops_per_step"``,
        ``"flops_per_frame"`` and ``"achieved_flops_per_second"``.

    Raises:
        ValueError: bad sampler settings (from the env).
    """
    import gymnasium as gym

    envs = gym.make_vec("worldsim/WorldModel-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                        model=pipeline, **_env_kwargs(settings))
    envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    low, high = envs.single_action_space.low, envs.single_action_space.high

    def step():
        envs.step(rng.uniform(low, high, (num_envs, *low.shape)).astype(np.float32))
        return num_envs

    # fill the KV cache first, so the timed steps and the counted one attend to a full window
    for _ in range(pipeline.local_attn_size):
        step()
    rate, count = steps_per_second(step, seconds, warmup=0)
    out = {"num_envs": num_envs, "steps_per_second": rate, "steps": count}
    if flops:
        with pipeline.graphs_paused():  # a replayed graph runs no operator the FLOP counter can see
            per_step = count_flops(step)
        out.update({"flops_per_step": per_step, "flops_per_frame": per_step / num_envs,
                    "achieved_flops_per_second": per_step * rate / num_envs})
    envs.close()
    return out


def config_flops_per_frame(pipeline, num_inference_steps: int, num_envs: int) -> dict:
    """FLOPs of one imagined frame counted from the config: the denoising passes, the cache pass, the decoder.

    The transformer passes come from :func:`~worldsim.utils.measure.transformer_flops` (``num_inference_steps``
    denoising passes and one cache-only pass that writes the finished frame into a full cache of
    ``local_attn_size - 1`` frames); the autoencoder decoder and the outcome heads are counted by ``FlopCounterMode``
    on one latent (convolutions have no closed form worth keeping here).
    """
    from worldsim.models.world_model import WorldModelTransformer

    config = pipeline.transformer.config
    past = pipeline.sink_size + pipeline.local_attn_size - 1
    if isinstance(pipeline.transformer, WorldModelTransformer):
        passes = (num_inference_steps * transformer_flops(config, num_envs, 1, past)
                  + transformer_flops(config, num_envs, 1, past, keys_only=True)) / num_envs
    else:  # an adapted backbone (worldsim.models.backbones): no closed form here, so its passes are counted
        passes = _counted_cached_pass_flops(pipeline.transformer, num_inference_steps, past)
    latent = torch.zeros(1, config.in_channels, *pipeline.transformer.latent_size, device=pipeline.device)
    from worldsim.models.autoencoders import decode_latents

    decoder = count_flops(lambda: decode_latents(pipeline.frame_decoder, latent))  # the one set_decoder picked
    heads_module = pipeline.heads_for()
    heads = count_flops(lambda: heads_module.predict(latent)) if heads_module is not None else 0
    return {"transformer": passes, "decoder": decoder, "heads": heads, "total": passes + decoder + heads}


def _counted_cached_pass_flops(transformer, num_inference_steps: int, past: int) -> float:
    """FLOPs of one env's imagined frame, counted by ``FlopCounterMode``: ``num_inference_steps`` cached denoising
    passes and one cache-only pass against a cache of ``past`` frames."""
    device = transformer.null_action.device
    shape = (1, 1, transformer.config.in_channels, *transformer.latent_size)
    action = torch.zeros(1, 1, transformer.config.action_dim, device=device)
    cache = transformer.new_cache(1, local_attn_size=past + 1)
    with torch.no_grad():
        for _ in range(past):
            transformer.forward_cached(torch.zeros(shape, device=device), torch.zeros(1, 1, device=device), action,
                                       None, cache, update_cache=True, return_output=False)
        timestep = torch.full((1, 1), 500.0, device=device)
        denoise = count_flops(lambda: transformer.forward_cached(torch.zeros(shape, device=device), timestep, action,
                                                                 None, cache))
        write = count_flops(lambda: transformer.forward_cached(torch.zeros(shape, device=device), timestep, action,
                                                               None, cache.reorder(torch.zeros(1, dtype=torch.long)),
                                                               update_cache=True, return_output=False))
    return float(num_inference_steps * denoise + write)


# ---------------------------------------------------------------------------------------------------- training
def training_speed(pipeline, run_config_path: Path | None, batch_size: int | None, num_frames: int | None,
                   steps: int, device: str = "cpu", seed: int = 0) -> dict:
    """Training samples per second and achieved FLOP/s of the world model (forward, backward, AdamW, bf16 autocast).

    A fresh transformer with the pipeline's config is trained on random latents and actions with the package's
    training loss; the batch size and clip length default to the run config's (``train.batch_size``,
    ``dataset.num_frames``). FLOPs of one step are counted by ``FlopCounterMode`` (forward and backward).
    """
    from worldsim.models.world_model import WorldModelTransformer, block_causal_attention
    from worldsim.training.config import TrainConfig, load_config
    from worldsim.training.train_world_model import flow_matching_loss

    train_config, clip = TrainConfig(), 8
    if run_config_path is not None and run_config_path.is_file():
        run_config = load_config(run_config_path)
        train_config, clip = run_config.train, run_config.dataset.num_frames
    batch_size, num_frames = batch_size or train_config.batch_size, num_frames or clip
    torch.manual_seed(seed)
    model = type(pipeline.transformer).from_config(pipeline.transformer.config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.learning_rate,
                                  weight_decay=train_config.weight_decay)
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch_size, num_frames, config.in_channels, *pipeline.transformer.latent_size,
                          generator=generator).to(device)
    action = (torch.rand(batch_size, num_frames, config.action_dim, generator=generator) * 2 - 1).to(device)
    ids = None if not config.embodiments else torch.zeros(batch_size, dtype=torch.long, device=device)

    def forward_backward():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            loss = flow_matching_loss(model, latents, action, train_config, generator, embodiment=ids)
        loss.backward()

    def step():
        forward_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds_per_step = (time.perf_counter() - started) / steps
    flops = count_flops(forward_backward)
    optimizer.zero_grad(set_to_none=True)
    return {"batch_size": batch_size, "num_frames": num_frames, "steps": steps, "seconds_per_step": seconds_per_step,
            "samples_per_second": batch_size / seconds_per_step, "frames_per_second": batch_size * num_frames / seconds_per_step,
            "flops_per_step": flops, "achieved_flops_per_second": flops / seconds_per_step,
            "block_causal_attention": block_causal_attention(),
            "config_flops_per_step": 3 * transformer_flops(config, batch_size, num_frames, 0)
            if isinstance(model, WorldModelTransformer) else None}


# ---------------------------------------------------------------------------------------------------- memory
def rollout_memory_child(model: str, steps: int, settings: dict, device: str, seed: int = 0) -> dict:
    """In this process: a single-env rollout of ``steps`` steps; returns peak resident memory
    (:func:`~worldsim.utils.measure.peak_resident_mib`)."""
    import gymnasium as gym

    import worldsim  # noqa: F401  (registers the env ids)

    if settings.get("quantize"):
        from worldsim.pipelines.world_model import WorldModelPipeline

        model = WorldModelPipeline.from_pretrained(model, device)
        model.set_decoder(settings.get("decoder"))  # int8+decoder quantizes the decoder in use
        model.quantize(settings["quantize"])
    env = gym.make("worldsim/WorldModel-v0", model=model, device=device, **_env_kwargs(settings))
    env.reset(seed=seed)
    after_reset = peak_resident_mib()
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    finite = True
    started = time.perf_counter()
    for _ in range(steps):
        observation, reward, *_ = env.step(rng.uniform(low, high).astype(np.float32))
        finite = finite and bool(np.isfinite(reward))
    out = {"steps": steps, "peak_rss_mib": peak_resident_mib(),
           "peak_rss_after_reset_mib": after_reset, "seconds": time.perf_counter() - started,
           "finite_rewards": finite}
    if device.startswith("cuda"):
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def rollout_memory(model: str, steps: int, settings: dict, device: str = "cpu") -> dict:
    """:func:`rollout_memory_child` in a fresh Python process (so each length has its own peak).

    Raises:
        RuntimeError: the child process failed (its stderr is in the message).
    """
    arguments = ["-m", "worldsim.benchmark", "--memory-child", str(steps), "--model", str(model), "--device", device,
                 "--settings", json.dumps(settings)]
    return json_from_fresh_process(arguments, f"memory probe of {steps} steps")


# ---------------------------------------------------------------------------------------------------- the run
def run_benchmark(model: str, num_envs=(16, 64), seconds: float = 20.0, num_inference_steps: int | None = None,
                  timestep_spacing: str | None = None, latency_steps: int = 200,
                  memory_steps=(200, 2000), train_steps: int = 10, train_batch_size: int | None = None,
                  real_seconds: float | None = None, device: str = "cpu", peak_seconds: float = 1.0,
                  progress=print, decoder: str | None = None, quantize: str | None = None,
                  cuda_graphs: bool = False) -> dict:
    """Runs every measurement of the module docstring and returns the report (see :func:`markdown_report`).

    Args:
        model: pipeline folder.
        num_envs: vector-env sizes; FLOP/s of inference are measured at the largest.
        seconds: timing length per env measurement.
        num_inference_steps, timestep_spacing: the sampler; None takes the model's default (what ``gym.make`` gives).
        decoder: ``"full"`` (the autoencoder's decoder) or ``"light"`` (the model's light decoder); None: the
            model's default.
        quantize: None (default: bf16 autocast), ``"int8"`` (the transformer's block linear layers run as dynamic
            int8) or ``"int8+decoder"`` (those, and the light decoder in static int8); see
            :meth:`~worldsim.pipelines.WorldModelPipeline.quantize` (CPU only). ``FlopCounterMode`` does not see
            quantized matmuls and convolutions, so the achieved FLOP/s are then taken from the config's count, over
            the same bf16 peak. Training is measured in float either way.
        cuda_graphs: step the imagined envs through captured CUDA graphs once their KV cache is full
            (:meth:`~worldsim.pipelines.WorldModelPipeline.enable_cuda_graphs`; CUDA only). FLOPs are still counted
            on an eager step.
        latency_steps: single-env steps timed one by one for the latency percentiles.
        memory_steps: rollout lengths whose peak memory is measured (each in a fresh process); empty: skip.
        train_steps: timed training steps (0: skip training).
        train_batch_size: training batch (default: the run config's).
        real_seconds: timing length of the real env (default: ``seconds``).
        device: ``"cpu"`` or ``"cuda"``.
        peak_seconds: timing length of each matmul size for the peak.
        progress: called with a line of text after each measurement.

    Raises:
        ValueError: ``num_envs`` empty or below 1, ``seconds <= 0``, ``decoder="light"`` for a model without one,
            or a quantization mode that is unknown or not available on ``device``.
    """
    from worldsim.pipelines.world_model import WorldModelPipeline

    num_envs = sorted({int(n) for n in num_envs})
    if not num_envs or num_envs[0] < 1:
        raise ValueError(f"num_envs must be a non-empty list of integers >= 1, got {num_envs}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    import worldsim  # noqa: F401  (registers the env ids)

    pipeline = WorldModelPipeline.from_pretrained(model, device)
    settings = pipeline.resolve_sampler(num_inference_steps or None, timestep_spacing)  # refuses bad settings now
    pipeline.set_decoder(decoder or pipeline.decoder_name)
    settings["decoder"] = pipeline.decoder_name
    # counted from the float modules: FlopCounterMode sees neither quantized matmuls nor quantized convolutions
    config_flops = config_flops_per_frame(pipeline, settings["num_inference_steps"], num_envs[-1])
    if quantize:
        pipeline.quantize(quantize)
        settings["quantize"] = quantize
    if cuda_graphs:
        pipeline.enable_cuda_graphs()  # refuses a device other than CUDA
        settings["cuda_graphs"] = True
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine_description(device), "model": str(model),
              "sampler": settings, "outcome_heads": pipeline.heads_for() is not None}
    started = time.perf_counter()

    report["matmul_peak"] = matmul_peak(device, seconds=peak_seconds)
    peak = report["matmul_peak"]["flops_per_second"]
    progress(f"bf16 matmul peak: {peak / 1e9:.0f} GFLOP/s")
    from worldsim.embodiments import resolve_embodiment

    report["real_env"] = real_env_steps_per_second(resolve_embodiment(pipeline)[1], real_seconds or seconds)
    real = report["real_env"]["steps_per_second"]
    progress(f"real {report['real_env']['env_id']} (pixels): {real:.1f} steps/s")
    replayed = pipeline.graph_steps
    report["single_env"] = single_env_speed(pipeline, settings, seconds, latency_steps)
    single = report["single_env"]
    if cuda_graphs:  # what share of the timed steps a CUDA graph replayed (the rest filled the cache, or warmed up)
        single["graph_steps"] = pipeline.graph_steps - replayed
    progress(f"single imagined env: {single['steps_per_second']:.1f} steps/s" + (
        f", latency median {single['latency_ms_median']:.1f} ms, p95 {single['latency_ms_p95']:.1f} ms"
        if single["latency_ms_median"] is not None else ""))
    report["vector_env"] = {}
    for n in num_envs:
        replayed = pipeline.graph_steps
        entry = vector_env_speed(pipeline, n, settings, seconds, flops=n == num_envs[-1])
        if cuda_graphs:
            entry["graph_steps"] = pipeline.graph_steps - replayed
        entry["speedup_over_single"] = entry["steps_per_second"] / single["steps_per_second"]
        entry["ratio_to_real"] = entry["steps_per_second"] / real
        if "achieved_flops_per_second" in entry:
            entry["fraction_of_peak"] = entry["achieved_flops_per_second"] / peak
        report["vector_env"][str(n)] = entry
        progress(f"vector env, {n} envs: {entry['steps_per_second']:.1f} steps/s ({entry['ratio_to_real']:.2f}x real)")
    report["single_env"]["ratio_to_real"] = single["steps_per_second"] / real
    largest = report["vector_env"][str(num_envs[-1])]
    if quantize:  # the FLOP counter does not see quantized matmuls: take the config's count
        largest["achieved_flops_per_second"] = config_flops["total"] * largest["steps_per_second"]
        largest["fraction_of_peak"] = largest["achieved_flops_per_second"] / peak
    report["inference_flops"] = {"num_envs": num_envs[-1], "counted_per_frame": largest["flops_per_frame"],
                                 "config_per_frame": config_flops,
                                 "achieved_flops_per_second": largest["achieved_flops_per_second"],
                                 "fraction_of_peak": largest["fraction_of_peak"],
                                 "from": "config" if quantize else "counted"}
    progress(f"inference at {num_envs[-1]} envs: {largest['achieved_flops_per_second'] / 1e9:.0f} GFLOP/s, "
             f"{100 * largest['fraction_of_peak']:.1f}% of the bf16 matmul peak")
    if train_steps:
        run_config = Path(model) / "run_config.yaml"
        training = training_speed(pipeline, run_config, train_batch_size, None, train_steps, device)
        training["fraction_of_peak"] = training["achieved_flops_per_second"] / peak
        report["training"] = training
        progress(f"training: {training['samples_per_second']:.1f} samples/s, "
                 f"{training['achieved_flops_per_second'] / 1e9:.0f} GFLOP/s ({100 * training['fraction_of_peak']:.1f}% of peak)")
    report["memory"] = {}
    for steps in memory_steps:
        report["memory"][str(steps)] = rollout_memory(model, int(steps), settings, device)
        progress(f"rollout of {steps} steps: peak RSS {report['memory'][str(steps)]['peak_rss_mib']:.1f} MiB")
    report["wall_seconds"] = time.perf_counter() - started
    return report


def markdown_report(report: dict, command: str | None = None) -> str:
    """The report as a markdown section: machine, date, command, then one table of figures."""
    machine = report["machine"]
    where = f"{machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads"
    if machine.get("memory_gib"):
        where += f", {machine['memory_gib']} GiB"
    if machine.get("gpu"):
        where += f", GPU {machine['gpu']}"
    sampler = report["sampler"]
    real = report["real_env"]
    lines = [f"Date {report['date']}; machine: {where}; torch {machine['torch']}, device {machine['device']}. "
             f"Model `{report['model']}` (outcome heads: {'on' if report['outcome_heads'] else 'none'}), sampler: "
             f"{sampler['num_inference_steps']} Euler steps, `{sampler['timestep_spacing']}` spacing, KV cache; "
             f"decoder: {sampler.get('decoder', 'full')}"
             + (f"; quantized: {QUANTIZATION_LABELS[sampler['quantize']]}" if sampler.get("quantize") else "")
             + ("; steady-state steps replayed as CUDA graphs" if sampler.get("cuda_graphs") else "")
             + ".", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    single = report["single_env"]
    lines += ["| measure | value |", "|---|---|",
              f"| real `{real['env_id']}` (pixels {'x'.join(map(str, real['observation_shape']))}), "
              f"steps/s | {real['steps_per_second']:.1f} |",
              f"| imagined single env, steps/s (ratio to real) | {single['steps_per_second']:.1f} "
              f"({single['ratio_to_real']:.2f}x) |"]
    for n, entry in report["vector_env"].items():
        lines.append(f"| imagined vector env, {n} envs, steps/s (ratio to real; vs single env) | "
                     f"{entry['steps_per_second']:.1f} ({entry['ratio_to_real']:.2f}x; {entry['speedup_over_single']:.2f}x) |")
    if single["latency_ms_median"] is not None:
        lines.append(f"| single env latency per frame, median / p95 (ms) | {single['latency_ms_median']:.1f} / "
                     f"{single['latency_ms_p95']:.1f} |")
    peak = report["matmul_peak"]
    lines.append(f"| measured {peak['dtype']} matmul peak (GFLOP/s) | {peak['flops_per_second'] / 1e9:.0f} |")
    inference = report["inference_flops"]
    config = inference["config_per_frame"]
    lines.append(f"| inference FLOPs per frame: counted / from the config (MFLOP) | "
                 f"{inference['counted_per_frame'] / 1e6:.0f} / {config['total'] / 1e6:.0f} (transformer "
                 f"{config['transformer'] / 1e6:.0f}, decoder {config['decoder'] / 1e6:.0f}, heads "
                 f"{config['heads'] / 1e6:.1f}) |")
    lines.append(f"| inference at {inference['num_envs']} envs, GFLOP/s (fraction of peak)"
                 + (" from the config's FLOPs" if inference.get("from") == "config" else "") + " | "
                 f"{inference['achieved_flops_per_second'] / 1e9:.0f} ({100 * inference['fraction_of_peak']:.1f}%) |")
    if "training" in report:
        training = report["training"]
        lines.append(f"| training, samples/s (batch {training['batch_size']} x {training['num_frames']} frames) | "
                     f"{training['samples_per_second']:.1f} |")
        lines.append(f"| training GFLOP/s (fraction of peak) | {training['achieved_flops_per_second'] / 1e9:.0f} "
                     f"({100 * training['fraction_of_peak']:.1f}%) |")
    for steps, entry in report.get("memory", {}).items():
        lines.append(f"| peak resident memory, {int(steps):,}-step rollout (MiB) | {entry['peak_rss_mib']:.1f} |")
    return "\n".join(lines) + "\n"


def _main(argv=None) -> None:
    """``python -m worldsim.benchmark --memory-child N ...``: the child process of :func:`rollout_memory`."""
    import argparse

    parser = argparse.ArgumentParser(description="worldsim bench: memory probe child (use `worldsim bench`)")
    parser.add_argument("--memory-child", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--settings", default="{}")
    args = parser.parse_args(argv)
    print(json.dumps(rollout_memory_child(args.model, args.memory_child, json.loads(args.settings), args.device)))


if __name__ == "__main__":
    _main()
