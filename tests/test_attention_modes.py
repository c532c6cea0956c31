"""Block-causal attention computed three ways (one masked SDPA call, one unmasked call per frame, FlexAttention)
gives one result, in the full pass and in multi-frame cached passes, for worldsim's transformer and an adapted Wan."""
from __future__ import annotations

import warnings

import pytest
import torch

from tests.conftest import randomize, tiny_transformer
from tests.test_backbones import tiny_wan
from worldsim.models.world_model import set_block_causal_attention


@pytest.fixture(autouse=True)
def restore_mode():
    previous = set_block_causal_attention("dense")
    yield
    set_block_causal_attention(previous)


@pytest.mark.parametrize("build, shape", [(lambda: randomize(tiny_transformer()), (2, 5, 4, 4, 4)),
                                          (lambda: randomize(tiny_wan()), (2, 5, 4, 4, 8))])
def test_every_block_causal_mode_gives_the_same_frames(build, shape, monkeypatch):
    model = build().eval()
    torch.manual_seed(3)
    sample, timestep = torch.randn(shape), torch.rand(shape[:2]) * 1000
    action = torch.randn(*shape[:2], model.config.action_dim)
    results, calls = {}, []
    import torch.nn.attention.flex_attention as flex
    from worldsim.models import world_model

    chunked, flexed = world_model._frame_chunked, flex.flex_attention
    monkeypatch.setattr(world_model, "_frame_chunked", lambda *a: calls.append("frame-chunked") or chunked(*a))
    monkeypatch.setattr(flex, "flex_attention", lambda *a, **k: calls.append("flex") or flexed(*a, **k))
    for mode in ("dense", "frame-chunked", "flex"):
        set_block_causal_attention(mode)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FlexAttention warns that eager mode is its unfused reference
            full = model(sample, timestep, action)
            cache = model.new_cache(2, local_attn_size=8)
            model.forward_cached(sample[:, :2], timestep[:, :2], action[:, :2], None, cache, update_cache=True)
            cached = model.forward_cached(sample[:, 2:], timestep[:, 2:], action[:, 1:4], None, cache)
        results[mode] = (full, cached)
    assert "frame-chunked" in calls and "flex" in calls  # each mode really ran its own kernel
    for mode in ("frame-chunked", "flex"):
        torch.testing.assert_close(results[mode][0], results["dense"][0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(results[mode][1], results["dense"][1], atol=2e-5, rtol=1e-4)


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="'sparse' is not one of"):
        set_block_causal_attention("sparse")
