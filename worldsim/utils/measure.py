"""Generic measuring tools: wall-clock rates and latencies, FLOPs (counted by torch and from a transformer's config),
the machine's matmul peak and description, resident memory (current, peak, and measured in a fresh process), and the
markdown section that reports are written into.

This module imports nothing from worldsim above :mod:`worldsim.utils` (no pipelines, envs or training), so tools,
tests and other modules measure with it without importing the benchmark app (:mod:`worldsim.benchmark`, the
``worldsim bench`` verb, which is built on it).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from worldsim.utils.files import write_text_atomic
from worldsim.utils.shapes import size_pair

MARKDOWN_BEGIN = "<!-- worldsim bench: begin (written by `worldsim bench --markdown`) -->"
MARKDOWN_END = "<!-- worldsim bench: end -->"


# ---------------------------------------------------------------------------------------------------- the machine
def machine_description(device: str = "cpu") -> dict:
    """CPU model, cores, torch threads, memory, torch version and (on CUDA) the GPU name, as a dict of strings/ints."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {"cpu": cpu, "cores": cores, "torch_threads": torch.get_num_threads(), "memory_gib": memory_gib,
           "torch": torch.__version__, "python": platform.python_version(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def synchronize(device: str) -> None:
    """Waits for the work queued on ``device`` to finish (CUDA); a no-op on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.bfloat16, sizes=(1024, 2048, 4096),
                seconds: float = 1.0) -> dict:
    """The best square-matmul throughput of the machine in ``dtype``: the "physical limit" FLOP/s are compared with.

    Each size ``n`` multiplies two `(n, n)` matrices repeatedly for about ``seconds`` after a warm-up; a matmul is
    ``2 n^3`` FLOPs.

    Returns:
        ``{"flops_per_second": best FLOP/s, "by_size": {n: FLOP/s}, "dtype": str}``.
    """
    by_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        for _ in range(2):
            a @ b
        synchronize(device)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or count < 3:
            a @ b
            count += 1
        synchronize(device)
        by_size[n] = 2 * n ** 3 * count / (time.perf_counter() - started)
    return {"flops_per_second": max(by_size.values()), "by_size": by_size, "dtype": str(dtype).replace("torch.", "")}


# ---------------------------------------------------------------------------------------------------- FLOPs
def transformer_flops(config, batch: int, new_frames: int = 1, past_frames: int = 0, keys_only: bool = False) -> int:
    """FLOPs of one :class:`~worldsim.models.WorldModelTransformer` pass, counted from its config.

    A multiply-add is 2 FLOPs. Counted: every linear layer on tokens (patch embedding, QKV, attention output, MLP,
    output projection), attention (``Q K^T`` and ``P V`` over ``past_frames + new_frames`` frames, the full
    block-causal matrix as SDPA computes it), and the per-frame conditioning (timestep embedding, adaLN, action
    adapter, action encoder; the mixture of action experts, per frame and tiny, is left out). Norms, activations and
    rotary embeddings (O(tokens x width)) are left out, as is customary (Kaplan et al. 2020).

    Args:
        config: the transformer's config (``model.config``).
        batch: B, rows in the pass.
        new_frames: F, frames whose tokens go through the pass.
        past_frames: P, cached history frames the new tokens attend to.
        keys_only: a pass that only fills the KV cache (``forward_cached(..., return_output=False)``): its last
            block computes its modulation and QKV projection only, and there is no output projection.

    Returns:
        FLOPs as an int.
    """
    width = config.num_attention_heads * config.attention_head_dim
    hidden = int(width * config.mlp_ratio)
    height, width_latent = size_pair(config.sample_size, "sample_size")
    per_frame = (height // config.patch_size) * (width_latent // config.patch_size)
    tokens = batch * new_frames * per_frame  # token rows of the pass
    rows = batch * new_frames  # frame rows (per-frame conditioning)
    patch = config.in_channels * config.patch_size ** 2
    keys = (past_frames + new_frames) * per_frame
    per_layer = (2 * tokens * width * (3 * width + width + 2 * hidden)  # QKV, out, MLP
                 + 4 * tokens * keys * width  # Q K^T and P V, all heads
                 + 2 * rows * width * (6 * width + 2 * width))  # adaLN modulation, action adapter (two linears)
    action_in = config.action_dim * (1 + 2 * config.action_num_frequencies)
    conditioning = 2 * rows * (256 * width + width * width + action_in * width + width * width + 2 * width * width)
    if not keys_only:
        return int(config.num_layers * per_layer + 2 * tokens * patch * width * 2 + conditioning)
    last = 2 * tokens * width * 3 * width + 2 * rows * width * 6 * width  # QKV, adaLN modulation
    final = 2 * rows * width * 2 * width  # the output adaLN, not run
    return int((config.num_layers - 1) * per_layer + last + 2 * tokens * patch * width + conditioning - final)


def _sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """FLOPs of CPU SDPA ``(B, H, L, E) x (B, H, S, E)``: ``Q K^T`` and ``P V``, for ``FlopCounterMode``."""
    *lead, length, dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    rows = int(np.prod(lead))
    return 2 * rows * length * keys * dim + 2 * rows * length * keys * value_dim


def count_flops(function) -> int:
    """FLOPs of ``function()`` as torch's ``FlopCounterMode`` counts them (matmuls, convolutions, attention).

    The CPU flash-attention kernel is not in torch's table; it is added here (:func:`_sdpa_flops`), so attention
    counts on CPU as it does on CUDA.
    """
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        function()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------------- speed
def steps_per_second(step, seconds: float, warmup: int = 2) -> tuple[float, int]:
    """Calls ``step()`` (which returns how many env steps it made) for ``seconds`` after ``warmup`` calls.

    Returns:
        (env steps per second, env steps made while timing).
    """
    for _ in range(warmup):
        step()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += step()
    return done / (time.perf_counter() - started), done


def latency_ms(function, calls: int) -> dict:
    """Times ``calls`` calls of ``function()`` one by one (wall clock).

    Returns:
        ``{"median": float, "p95": float}``, milliseconds per call; both None when ``calls`` is 0.
    """
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        function()
        latencies.append(time.perf_counter() - started)
    latencies = np.asarray(latencies) * 1000.0
    timed = len(latencies) > 0
    return {"median": float(np.median(latencies)) if timed else None,
            "p95": float(np.percentile(latencies, 95)) if timed else None}


# ---------------------------------------------------------------------------------------------------- memory
def _proc_status_mib(field: str) -> float | None:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB, or None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def resident_mib() -> float:
    """This process's current resident memory (``VmRSS``) in MiB; NaN where ``/proc`` has none."""
    value = _proc_status_mib("VmRSS")
    return float("nan") if value is None else value


def peak_resident_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` of ``/proc/self/status`` where there is one.

    ``getrusage``'s ``ru_maxrss`` is the fallback; on Linux it survives ``execve``, so a child started by a large
    parent would report the parent's peak, while ``VmHWM`` belongs to the new address space.
    """
    value = _proc_status_mib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if value is None else value


def json_from_fresh_process(arguments: list[str], what: str) -> dict:
    """Runs ``python <arguments>`` in a fresh Python process and returns the JSON object it printed last.

    A fresh process has its own address space, so a peak it reports (:func:`peak_resident_mib`) is its own.

    Args:
        arguments: the interpreter's arguments, e.g. ``["-m", "package.module", "--flag", "1"]``.
        what: what the process measures, for the error message.

    Returns:
        The JSON object on the last line of the process's stdout.

    Raises:
        RuntimeError: the process exited with a non-zero status (``what`` and the end of its stderr are in the
            message).
    """
    done = subprocess.run([sys.executable, *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- reports
def write_markdown_section(path: str | Path, section: str) -> Path:
    """Puts ``section`` between the bench markers of a markdown file (replacing what was there), or appends it.

    The file is written to a temporary name and renamed, so an interrupted write leaves the old file whole.
    """
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    block = f"{MARKDOWN_BEGIN}\n{section}{MARKDOWN_END}"
    if MARKDOWN_BEGIN in text and MARKDOWN_END in text:
        head, rest = text.split(MARKDOWN_BEGIN, 1)
        text = head + block + rest.split(MARKDOWN_END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    return write_text_atomic(path, text)
