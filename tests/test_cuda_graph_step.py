"""The CUDA-graph step (worldsim.pipelines.cuda_graph): its body, run eagerly on a CPU, gives exactly what the eager
step gives, in a rollout and across a vector env's restarts; and it
never reads the device from the host, which a captured graph cannot do. The capture itself needs a GPU."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from tests.conftest import make_tiny_pipeline


def _rollout(pipeline, graphs: bool | str, steps: int = 7, restart_at: int | None = None):
    pipeline.enable_cuda_graphs(bool(graphs), capture=False)
    if graphs == "capture":  # the capture path, with torch.cuda faked by the test
        pipeline._cuda_graphs = "capture"
    rng = np.random.default_rng(1)
    context, context_action = rng.integers(0, 255, (2, 3, 16, 16, 3), dtype=np.uint8), \
        rng.uniform(0, 512, (2, 2, 2)).astype(np.float32)
    actions = rng.uniform(0, 512, (steps, 2, 2)).astype(np.float32)
    generator = torch.Generator().manual_seed(3)
    state = pipeline.encode_context(context, context_action, generator=generator)
    frames, latents = [], []
    for index in range(steps):
        if index == restart_at:  # sub-env 1 restarts from new context while sub-env 0 carries on
            state = pipeline.restart(state, [1], context[:1, :2], context_action[:1, :1], generator=generator)
        state = pipeline.step(state, actions[index], generator=generator)
        frames.append(state.frames.numpy().copy())
        latents.append(state.latents.numpy().copy())
    return np.stack(frames), np.stack(latents)


@pytest.mark.parametrize("restart_at", [None, 5])
def test_the_graph_body_steps_as_the_eager_step(restart_at):
    pipeline = make_tiny_pipeline()  # window 4: the cache is full after the context and one step
    eager = _rollout(pipeline, False, restart_at=restart_at)
    graphed = _rollout(pipeline, True, restart_at=restart_at)
    assert pipeline.graph_steps == (3 if restart_at else 5)  # steps 3-7, or 3-5 before the restart, replayed
    np.testing.assert_array_equal(graphed[0], eager[0])
    np.testing.assert_allclose(graphed[1], eager[1], atol=1e-6)


@contextlib.contextmanager
def no_device_reads():
    """Makes every way of reading a tensor's values on the host raise, as a CUDA graph capture would."""
    def refuse(*args, **kwargs):
        raise AssertionError("the host read a tensor's value")

    import worldsim.models.autoencoders as autoencoders

    names = ["__bool__", "item", "tolist", "nonzero", "__int__", "__float__", "numpy", "cpu"]
    saved = {name: getattr(torch.Tensor, name) for name in names}
    for name in names:
        setattr(torch.Tensor, name, refuse)
    # a per-channel latent normalisation is built on the host: on a GPU that is a host-to-device copy
    normalization, autoencoders.latent_normalization = autoencoders.latent_normalization, refuse
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(torch.Tensor, name, value)
        autoencoders.latent_normalization = normalization


def test_the_graph_body_never_reads_the_device():
    pipeline = make_tiny_pipeline()
    _rollout(pipeline, True, steps=3)
    graph = pipeline._graph
    assert graph is not None
    graph._body()  # outside the guard it runs ...
    with no_device_reads():
        graph._body()  # ... and inside it too: nothing in it synchronises with the device
    with no_device_reads(), pytest.raises(AssertionError, match="host read"):
        bool(torch.ones(1))  # the guard works


def test_graphs_need_a_cuda_device_and_fall_back_where_they_cannot_run():
    pipeline = make_tiny_pipeline()
    with pytest.raises(ValueError, match="CUDA device"):
        pipeline.enable_cuda_graphs(True)
    pipeline.enable_cuda_graphs(True, capture=False)
    rng = np.random.default_rng(0)
    state = pipeline.encode_context(rng.integers(0, 255, (1, 3, 16, 16, 3), dtype=np.uint8),
                                    rng.uniform(0, 512, (1, 2, 2)).astype(np.float32))
    state = pipeline.step(state, np.full((1, 2), 100.0, dtype=np.float32), action_guidance_scale=2.0)
    assert pipeline._graph is None  # guidance: eager
    for _ in range(2):  # captured at the third eligible step of the same rollout
        state = pipeline.step(state, np.full((1, 2), 100.0, dtype=np.float32))
        assert pipeline._graph is None
    pipeline.step(state, np.full((1, 2), 100.0, dtype=np.float32))
    assert pipeline._graph is not None and pipeline.graph_steps == 1
    pipeline.enable_cuda_graphs(False)
    assert pipeline._graph is None


class FakeCuda:
    """Stands in for torch.cuda's streams and graphs on a CPU: the "capture" runs the body for real (as a failed or
    a real warm-up would mutate the cache) and a replay runs it again, so the capture path's restore and
    bookkeeping are exercised."""

    def __init__(self, pipeline, fail: bool = False):
        self.pipeline, self.fail, self.captures = pipeline, fail, 0
        outer = self

        class Graph:
            def replay(self):
                outer.pipeline._graph._body()

        self.CUDAGraph = Graph

    class Stream:
        def wait_stream(self, other):
            pass

    def current_stream(self):
        return self.Stream()

    def stream(self, stream):
        return contextlib.nullcontext()

    def device(self, device):
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def graph(self, graph):
        self.captures += 1
        yield
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")

    def install(self, monkeypatch):
        for name in ("Stream", "current_stream", "stream", "device", "graph", "CUDAGraph"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))


@pytest.mark.parametrize("fail", [False, True])
def test_a_capture_restores_the_rollout_whether_or_not_it_succeeds(monkeypatch, fail):
    pipeline = make_tiny_pipeline()
    eager = _rollout(pipeline, False)
    fake = FakeCuda(pipeline, fail)
    fake.install(monkeypatch)
    if fail:
        with pytest.warns(UserWarning, match="capture failed, stepping eagerly"):
            captured = _rollout(pipeline, "capture")
        assert pipeline._cuda_graphs is None and pipeline._graph is None
    else:
        captured = _rollout(pipeline, "capture")
        assert pipeline._graph.graph is not None and pipeline.graph_steps == 5  # steps 3..7 replayed
    assert fake.captures == 1
    # the warm-up steps and the faked capture ran for real, and the cache was put back: the same frames
    np.testing.assert_array_equal(captured[0], eager[0])
    np.testing.assert_allclose(captured[1], eager[1], atol=1e-6)
