import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from tests.conftest import make_tiny_pipeline, randomize, tiny_autoencoder, tiny_transformer
from worldsim.models.actions import ActionAdapter
from worldsim.models.autoencoders import decode_latents, encode_frames
from worldsim.models.world_model import WorldModelTransformer, block_causal_mask
from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.models.kv_cache import FrameKVCache


def inputs(batch=2, frames=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, frames, 4, 4, 4, generator=g), torch.rand(batch, frames, generator=g) * 1000,
            torch.rand(batch, frames, 2, generator=g) * 2 - 1)


def test_output_shape_and_shape_errors():
    model = tiny_transformer()
    sample, timestep, action = inputs()
    assert model(sample, timestep, action).shape == sample.shape
    with pytest.raises(ValueError, match=r"timestep has shape \(2, 2\), expected \(2, 3\)"):
        model(sample, timestep[:, :2], action)
    with pytest.raises(ValueError, match="sample has shape"):
        model(sample[:, :, :3], timestep, action)
    with pytest.raises(ValueError, match="action has last dimension 3, expected 2"):
        model(sample, timestep, torch.zeros(2, 3, 3))


def test_attention_is_block_causal_over_frames():
    model = randomize(tiny_transformer()).eval()
    sample, timestep, action = inputs()
    out = model(sample, timestep, action)
    changed = sample.clone()
    changed[:, 2] += 1.0  # perturb the last frame
    changed_action = action.clone()
    changed_action[:, 1:] += 0.5  # actions that produce frames 2 and later
    out2 = model(changed, timestep, changed_action)
    torch.testing.assert_close(out[:, :2], out2[:, :2])  # earlier frames do not see later frames or actions
    assert not torch.allclose(out[:, 2], out2[:, 2])
    mask = block_causal_mask(3, 2)
    assert mask[0, :2].all() and not mask[0, 2:].any() and mask[5].all()


def test_frame_is_conditioned_on_the_action_that_produced_it():
    model = randomize(tiny_transformer()).eval()
    sample, timestep, action = inputs()
    changed = action.clone()
    changed[:, 0] += 0.5  # action[0] produces frame 1
    out, out2 = model(sample, timestep, action), model(sample, timestep, changed)
    torch.testing.assert_close(out[:, 0], out2[:, 0])
    assert not torch.allclose(out[:, 1], out2[:, 1])
    last = action.clone()
    last[:, -1] += 0.5  # the last action produces nothing inside the window
    torch.testing.assert_close(out, model(sample, timestep, last))


def test_action_adapter_starts_as_identity():
    adapter = ActionAdapter(8)
    hidden = torch.randn(2, 3, 4, 8)
    torch.testing.assert_close(adapter(hidden, torch.randn(2, 3, 8)), hidden)


def _with_temporal_positions(model, positions):
    """Makes ``model``'s forward pass use temporal rotary positions ``positions(num_frames)`` instead of 0..T-1
    (``del model.rotary`` undoes it)."""

    def moved(num_frames, device, first_frame=0):
        cos, sin = model.rotary_at(positions(num_frames).to(device)[None])  # (1, 1, T*N, head_dim / 2)
        return cos[0, 0], sin[0, 0]

    model.rotary = moved


@pytest.mark.parametrize("leak", [False, True])
def test_relative_time_positions_make_windows_shift_invariant(leak, monkeypatch):
    """Temporal RoPE is relative: the same window gives the same outputs whatever the absolute position of its first
    frame (the cached path puts new frames at ``num_frames``, a rollout's window slides), but not when the frames'
    *relative* arrangement changes. ``leak=True`` is the control: with the temporal rotation of the keys dropped,
    attention depends on where the queries are, and the same comparison fails."""
    import worldsim.models.world_model as world_model

    model = randomize(tiny_transformer()).eval()
    sample, timestep, action = inputs(frames=4)
    if leak:  # rotate only the queries' temporal channels: absolute positions leak into the attention scores
        apply_rope, temporal = world_model.apply_rope, model.config.rope_axes_dim[0] // 2
        calls = {"count": 0}

        def leaky(x, cos, sin):
            calls["count"] += 1
            if calls["count"] % 2 == 0:  # FrameCausalAttention rotates q, then k
                cos, sin = cos.clone(), sin.clone()
                cos[..., :temporal], sin[..., :temporal] = 1.0, 0.0
            return apply_rope(x, cos, sin)

        monkeypatch.setattr(world_model, "apply_rope", leaky)
    with torch.no_grad():
        reference = model(sample, timestep, action)
        outputs = {}
        for name, positions in {"shift 7": lambda t: torch.arange(t) + 7, "shift 120": lambda t: torch.arange(t) + 120,
                                "spread": lambda t: torch.arange(t) * 3}.items():
            _with_temporal_positions(model, positions)
            outputs[name] = model(sample, timestep, action)
            del model.rotary
    if leak:
        assert not torch.allclose(outputs["shift 7"], reference, atol=1e-3)
    else:
        torch.testing.assert_close(outputs["shift 7"], reference, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(outputs["shift 120"], reference, atol=1e-4, rtol=1e-3)
    # frames 1..3 attend across time: another relative arrangement is another output (positions do matter)
    assert not torch.allclose(outputs["spread"][:, 1:], reference[:, 1:], atol=1e-3)
    torch.testing.assert_close(outputs["spread"][:, 0], reference[:, 0], atol=1e-5, rtol=1e-4)  # frame 0 sees itself


def test_transformer_save_load_round_trip(tmp_path):
    model = randomize(tiny_transformer()).eval()
    model.save_pretrained(tmp_path / "t")
    assert (tmp_path / "t" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = WorldModelTransformer.from_pretrained(tmp_path / "t", use_safetensors=True).eval()
    sample, timestep, action = inputs()
    torch.testing.assert_close(model(sample, timestep, action), loaded(sample, timestep, action))


DISCRETE_5 = {"type": "Discrete", "n": 5, "start": 0}


def test_single_embodiment_discrete_actions_are_embedded_per_index(tmp_path):
    """A Discrete(5) action goes through a learned table with one row per index, not one ordinal number: each
    index's embedding is its own row (changing row 2 changes what action 2 does and nothing else)."""
    from worldsim.models.actions import BoxActionEncoder, DiscreteActionEncoder

    model = randomize(tiny_transformer(action_dim=1, action_space=DISCRETE_5)).eval()
    assert isinstance(model.action_encoder, DiscreteActionEncoder)
    assert isinstance(model.action_encoder.table, torch.nn.Embedding) and model.action_encoder.table.num_embeddings == 5
    assert not any(isinstance(module, BoxActionEncoder) for module in model.modules())
    sample, timestep, _ = inputs(batch=1, frames=2)
    run = lambda index: model(sample, timestep, torch.tensor([[[float(index)], [0.0]]]))[:, 1]  # action 0 -> frame 1
    with torch.no_grad():
        before = {index: run(index) for index in (1, 2, 3)}
        for first, second in ((1, 2), (2, 3), (1, 3)):
            assert not torch.allclose(before[first], before[second], atol=1e-4)
        model.action_encoder.table.weight[2] += 1.0
        after = {index: run(index) for index in (1, 2, 3)}
    torch.testing.assert_close(after[1], before[1], atol=0, rtol=0)
    torch.testing.assert_close(after[3], before[3], atol=0, rtol=0)
    assert not torch.allclose(after[2], before[2], atol=1e-4)
    with pytest.raises(ValueError, match=r"discrete action index 5 is outside \[0, 5\)"):
        model(sample, timestep, torch.full((1, 2, 1), 5.0))
    model.save_pretrained(tmp_path / "t")
    loaded = WorldModelTransformer.from_pretrained(tmp_path / "t", use_safetensors=True).eval()
    assert loaded.config.action_space == DISCRETE_5 and isinstance(loaded.action_encoder, DiscreteActionEncoder)
    action = torch.tensor([[[3.0], [1.0]]])
    torch.testing.assert_close(loaded(sample, timestep, action), model(sample, timestep, action), atol=0, rtol=0)


def test_action_space_option_is_checked_and_absent_means_the_box_encoder():
    from worldsim.models.actions import BoxActionEncoder, DictActionEncoder

    plain = tiny_transformer()
    assert plain.config.action_space is None and type(plain.action_encoder) is BoxActionEncoder  # existing configs
    box = tiny_transformer(action_space={"type": "Box", "low": [0, 0], "high": [1, 1], "shape": [2]})
    assert sorted(box.state_dict()) == sorted(plain.state_dict())  # a Box space builds the same encoder
    mixed = {"type": "Dict", "spaces": {"button": DISCRETE_5, "stick": {"type": "Box", "low": [-1], "high": [1],
                                                                        "shape": [1]}}}
    assert isinstance(tiny_transformer(action_dim=2, action_space=mixed).action_encoder, DictActionEncoder)
    with pytest.raises(ValueError, match=r"action_dim 2 differs from the flat size 1"):
        tiny_transformer(action_dim=2, action_space=DISCRETE_5)
    with pytest.raises(ValueError, match="single-embodiment"):
        tiny_transformer(action_dim=1, action_space=DISCRETE_5,
                         embodiments=[{"name": "a", "action_space": DISCRETE_5}])
    with pytest.raises(ValueError, match="unknown action space type 'Tuple'"):
        tiny_transformer(action_space={"type": "Tuple"})


def test_discrete_actions_reach_the_pipeline_encoder_as_indices():
    """The pipeline's normaliser passes a Discrete entry through unchanged (its ``continuous`` mask), so the index
    the env was given is the index the embedding table is read at."""
    pipeline = make_tiny_pipeline(start_frames=False)
    transformer = randomize(tiny_transformer(action_dim=1, action_space=DISCRETE_5))
    metadata = {**pipeline.metadata, "action_space": DISCRETE_5,
                "action_normalizer": {"min": [0.0], "max": [4.0], "continuous": [False]}}
    pipeline = WorldModelPipeline(pipeline.autoencoder, transformer, pipeline.scheduler, metadata)
    seen = []
    encoder = transformer.action_encoder
    encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    rng = np.random.default_rng(0)
    state = pipeline.encode_context(rng.integers(0, 255, (2, 2, 16, 16, 3), dtype=np.uint8),
                                    np.array([[[4.0]], [[0.0]]], np.float32))
    pipeline.step(state, np.array([[3.0], [1.0]], np.float32), generator=torch.Generator().manual_seed(0))
    assert seen[0].flatten().tolist() == [0.0, 4.0, 0.0, 0.0]  # context: (null slot, action 4) and (null, action 0)
    assert {tuple(values.flatten().tolist()) for values in seen[1:]} == {(3.0, 1.0)}


def test_autoencoder_round_trip_and_save_load(tmp_path):
    autoencoder = tiny_autoencoder().eval()
    frames = torch.randint(0, 255, (2, 3, 16, 16, 3), dtype=torch.uint8)
    latents = encode_frames(autoencoder, frames)
    assert latents.shape == (2, 3, 4, 4, 4)
    assert decode_latents(autoencoder, latents).shape == frames.shape
    autoencoder.save_pretrained(tmp_path / "ae")
    loaded = AutoencoderKL.from_pretrained(tmp_path / "ae", use_safetensors=True).eval()
    torch.testing.assert_close(encode_frames(loaded, frames), latents)


def test_pipeline_save_load_round_trip_and_seed_determinism(tmp_path):
    pipeline = make_tiny_pipeline()
    pipeline.save_pretrained(tmp_path / "p")
    loaded = WorldModelPipeline.from_pretrained(tmp_path / "p")
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (2, 3, 16, 16, 3), dtype=np.uint8)
    context_action = rng.uniform(0, 512, (2, 2, 2)).astype(np.float32)
    action = rng.uniform(0, 512, (2, 5, 2)).astype(np.float32)
    run = lambda p, seed: p.rollout(frames, context_action, action, generator=torch.Generator().manual_seed(seed))
    first = run(pipeline, 3)
    assert first.shape == (2, 5, 16, 16, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, run(pipeline, 3))
    np.testing.assert_array_equal(first, run(loaded, 3))
    assert not np.array_equal(first, run(pipeline, 4))
    torch.testing.assert_close(loaded.start_frames["frames"], pipeline.start_frames["frames"])


def test_pipeline_refuses_bad_context():
    pipeline = make_tiny_pipeline()
    frames = np.zeros((1, 3, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r"context action has shape \(1, 3, 2\), expected \(1, 2, 2\)"):
        pipeline.encode_context(frames, np.zeros((1, 3, 2), np.float32))
    with pytest.raises(ValueError, match="the model expects"):
        pipeline.encode_context(np.zeros((1, 3, 8, 8, 3), np.uint8), np.zeros((1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="must be uint8"):
        pipeline.encode_context(frames.astype(np.float32), np.zeros((1, 2, 2), np.float32))


def test_pipeline_folder_missing_part_is_named(tmp_path):
    make_tiny_pipeline().save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "worldsim.json").unlink()
    with pytest.raises(FileNotFoundError, match="lacks worldsim.json"):
        WorldModelPipeline.from_pretrained(tmp_path / "p")


def test_action_guidance():
    """Scale 0 is the unconditional branch (the current action is ignored); scale 1 equals no guidance."""
    pipeline = make_tiny_pipeline()
    rng = np.random.default_rng(2)
    state = pipeline.encode_context(rng.integers(0, 255, (1, 2, 16, 16, 3), dtype=np.uint8),
                                    rng.uniform(0, 512, (1, 1, 2)).astype(np.float32))
    step = lambda action, scale: pipeline.step(state.clone(), np.array([action], np.float32), generator=torch.Generator().manual_seed(0),
                                               action_guidance_scale=scale).frames
    torch.testing.assert_close(step([10.0, 10.0], 0.0), step([500.0, 300.0], 0.0))
    assert not torch.equal(step([10.0, 10.0], 1.0), step([500.0, 300.0], 1.0))
    assert not torch.equal(step([10.0, 10.0], 3.0), step([10.0, 10.0], 1.0))


def test_a_generator_list_gives_each_rollout_its_own_noise():
    """``generator=[g_0, ..., g_{B-1}]`` (diffusers' convention): rollout b of a batch imagines what it imagines alone
    with ``g_b``, whatever the other rows are; a list of the wrong length is refused."""
    pipeline = make_tiny_pipeline()
    pipeline.metadata.update(bf16=False)
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 255, (2, 2, 16, 16, 3), dtype=np.uint8)
    context_action = rng.uniform(0, 512, (2, 1, 2)).astype(np.float32)
    action = rng.uniform(0, 512, (2, 3, 2)).astype(np.float32)
    seeded = lambda *seeds: [torch.Generator().manual_seed(seed) for seed in seeds]
    batch = pipeline.rollout(frames, context_action, action, generator=seeded(7, 8))
    alone = pipeline.rollout(frames[1:], context_action[1:], action[1:], generator=seeded(8))
    assert np.abs(batch[1].astype(int) - alone[0].astype(int)).max() <= 1
    other = pipeline.rollout(frames, context_action, action, generator=seeded(9, 8))
    assert np.abs(other[1].astype(int) - batch[1].astype(int)).max() <= 1 and not np.array_equal(other[0], batch[0])
    with pytest.raises(ValueError, match="list of 3 torch.Generators for a batch of 2"):
        pipeline.rollout(frames, context_action, action, generator=seeded(1, 2, 3))
    state = pipeline.encode_context(frames, context_action, generator=seeded(1, 2))
    carried, disagreement = pipeline.step_with_disagreement(state, action[:, 0], 3, generator=seeded(1, 2))
    assert carried.batch_size == 2 and np.all(disagreement > 0)
    with pytest.raises(ValueError, match="list of 1 torch.Generators for a batch of 2"):
        pipeline.step(carried, action[:, 1], generator=seeded(1))


def _rollout_pair(pipeline, steps, **kwargs):
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 255, (2, 2, 16, 16, 3), dtype=np.uint8)
    context_action = rng.uniform(0, 512, (2, 1, 2)).astype(np.float32)
    action = rng.uniform(0, 512, (2, steps, 2)).astype(np.float32)
    run = lambda use_cache: pipeline.rollout(frames, context_action, action, use_cache=use_cache,
                                             generator=torch.Generator().manual_seed(0), **kwargs)
    return run(True), run(False)


@pytest.mark.parametrize("bf16", [False, True])
def test_cached_rollout_matches_full_recomputation(bf16):
    """While the history fits the window, the KV-cache path and the full recomputation give the same frames."""
    pipeline = make_tiny_pipeline()
    pipeline.metadata.update(bf16=bf16, window_size=6)
    cached, full = _rollout_pair(pipeline, steps=4)
    difference = np.abs(cached.astype(int) - full.astype(int))
    if bf16:  # bf16 rounding differs between the two batch layouts: a few grey levels at most
        assert difference.mean() < 1.0 and difference.max() <= 12
    else:
        assert difference.max() <= 1


def test_cached_rollout_with_guidance_matches_full_recomputation():
    pipeline = make_tiny_pipeline()
    pipeline.metadata.update(bf16=False, window_size=6)
    cached, full = _rollout_pair(pipeline, steps=3, action_guidance_scale=2.0)
    assert np.abs(cached.astype(int) - full.astype(int)).max() <= 1


def test_model_forward_cached_equals_forward():
    """One window through forward() equals the same window written frame by frame through the cache."""
    model = randomize(tiny_transformer()).eval()
    generator = torch.Generator().manual_seed(0)
    sample, action = torch.randn(2, 5, 4, 4, 4, generator=generator), torch.randn(2, 5, 2, generator=generator)
    timestep = torch.rand(2, 5, generator=generator) * 1000
    with torch.no_grad():
        full = model(sample, timestep, action)
        cache = model.new_cache(2, local_attn_size=5)
        producing = torch.cat([torch.zeros(2, 1, 2), action[:, :-1]], dim=1)
        mask = torch.ones(2, 5, dtype=torch.bool)
        mask[:, 0] = False
        first_two = model.forward_cached(sample[:, :2], timestep[:, :2], producing[:, :2], mask[:, :2], cache,
                                         update_cache=True)
        rest = [model.forward_cached(sample[:, t:t + 1], timestep[:, t:t + 1], producing[:, t:t + 1], None, cache,
                                     update_cache=True) for t in range(2, 5)]
    torch.testing.assert_close(torch.cat([first_two, *rest], dim=1), full, atol=1e-5, rtol=1e-4)
    assert cache.num_frames == 4 and cache.frames_seen == 5  # capacity local_attn_size - 1



def test_a_cache_only_pass_writes_the_same_keys_and_values():
    """return_output=False skips the last block's attention and MLP but fills the cache exactly as a full pass."""
    model = randomize(tiny_transformer()).eval()
    generator = torch.Generator().manual_seed(1)
    sample, action = torch.randn(2, 3, 4, 4, 4, generator=generator), torch.randn(2, 3, 2, generator=generator)
    timestep = torch.full((2, 3), 50.0)
    caches = [model.new_cache(2, local_attn_size=4) for _ in range(2)]
    with torch.no_grad():
        for t in range(3):
            out = model.forward_cached(sample[:, t:t + 1], timestep[:, t:t + 1], action[:, t:t + 1], None, caches[0],
                                       update_cache=True)
            assert out.shape == (2, 1, 4, 4, 4)
            assert model.forward_cached(sample[:, t:t + 1], timestep[:, t:t + 1], action[:, t:t + 1], None,
                                        caches[1], update_cache=True, return_output=False) is None
    torch.testing.assert_close(caches[1].keys, caches[0].keys, atol=0, rtol=0)
    torch.testing.assert_close(caches[1].values, caches[0].values, atol=0, rtol=0)
    seen = caches[1].frames_seen
    with pytest.raises(ValueError, match="update_cache"):
        model.forward_cached(sample[:, :1], timestep[:, :1], action[:, :1], None, caches[1], return_output=False)
    assert caches[1].frames_seen == seen

def test_kv_cache_keeps_sinks_and_recent_frames_within_capacity():
    cache = FrameKVCache(num_layers=1, batch_size=1, num_heads=1, head_dim=1, tokens_per_frame=1,
                         local_attn_size=3, sink_size=1)
    for frame in range(10_000):
        value = torch.full((1, 1, 1, 1), float(frame))
        cache.append([value], [value])
    keys, _ = cache.layer(0)
    assert keys.flatten().tolist() == [0.0, 9998.0, 9999.0] and cache.frames_seen == 10_000
    with pytest.raises(ValueError, match="local_attn_size must be >= 2"):
        FrameKVCache(1, 1, 1, 1, 1, local_attn_size=1)
    with pytest.raises(ValueError, match="expected keys and values for 1 layers"):
        cache.append([], [])


def test_stepping_a_stale_state_raises_and_clone_branches():
    pipeline = make_tiny_pipeline()
    rng = np.random.default_rng(3)
    state = pipeline.encode_context(rng.integers(0, 255, (1, 2, 16, 16, 3), dtype=np.uint8),
                                    rng.uniform(0, 512, (1, 1, 2)).astype(np.float32))
    branch = state.clone()
    action = np.array([[100.0, 200.0]], np.float32)
    first = pipeline.step(state, action, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="already stepped"):
        pipeline.step(state, action)
    again = pipeline.step(branch, action, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(first.frames, again.frames)
    longer = first
    for _ in range(12):  # far past the window: positions stay valid
        longer = pipeline.step(longer, action)
    assert longer.cache.num_frames == pipeline.local_attn_size - 1 and longer.num_steps == 13


def _write(model, cache, sample, timestep, action):
    """Writes frames (B, F, ...) into ``cache`` as encode_context does (first frame without a producing action)."""
    producing = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], dim=1)
    mask = torch.ones(sample.shape[:2], dtype=torch.bool)
    mask[:, 0] = False
    model.forward_cached(sample, timestep, producing, mask, cache, update_cache=True)


@pytest.mark.parametrize("old_frames, new_frames", [(4, 2), (1, 4), (6, 3)])
def test_spliced_rows_see_exactly_their_own_history(old_frames, new_frames):
    """A row restarted with a new (shorter or longer) history gives the same next frame as that history alone, and
    the rows left alone give what they gave before the splice."""
    model = randomize(tiny_transformer()).eval()
    generator = torch.Generator().manual_seed(1)
    noise = lambda *shape: torch.randn(*shape, generator=generator)
    with torch.no_grad():
        batch = model.new_cache(3, local_attn_size=5)
        _write(model, batch, noise(3, old_frames, 4, 4, 4), torch.rand(3, old_frames, generator=generator) * 100,
               noise(3, old_frames, 2))
        for _ in range(2):  # a couple of streamed frames, evicting once the window is full
            _write(model, batch, noise(3, 1, 4, 4, 4), torch.full((3, 1), 50.0), noise(3, 1, 2))
        fresh = model.new_cache(1, local_attn_size=5)
        _write(model, fresh, noise(1, new_frames, 4, 4, 4), torch.full((1, new_frames), 50.0), noise(1, new_frames, 2))
        alone = fresh.reorder(torch.tensor([0]))
        probe, probe_t, probe_action = noise(3, 1, 4, 4, 4), torch.full((3, 1), 700.0), noise(3, 1, 2)
        before = model.forward_cached(probe, probe_t, probe_action, None, batch)
        batch.splice(torch.tensor([1]), fresh)
        after = model.forward_cached(probe, probe_t, probe_action, None, batch)
        expected = model.forward_cached(probe[1:2], probe_t[1:2], probe_action[1:2], None, alone)
        # a guidance-stacked batch (2B rows over one cache) is masked the same way
        stacked = model.forward_cached(probe.repeat(2, 1, 1, 1, 1), probe_t.repeat(2, 1), probe_action.repeat(2, 1, 1),
                                       None, batch)
    torch.testing.assert_close(after[1], expected[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stacked[3:], after, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(after[1], before[1], atol=1e-3)


def test_splice_refuses_bad_rows_and_other_geometry():
    cache = FrameKVCache(num_layers=1, batch_size=2, num_heads=1, head_dim=1, tokens_per_frame=1, local_attn_size=3)
    other = FrameKVCache(num_layers=1, batch_size=1, num_heads=1, head_dim=1, tokens_per_frame=1, local_attn_size=3)
    with pytest.raises(ValueError, match="distinct indices"):
        cache.splice(torch.tensor([0, 1]), other)
    with pytest.raises(ValueError, match="out of range"):
        cache.splice(torch.tensor([2]), other)
    with pytest.raises(ValueError, match=r"rows \[0\] hold no frames"):
        cache.splice(torch.tensor([0]), other)
    sinks = FrameKVCache(num_layers=1, batch_size=2, num_heads=1, head_dim=1, tokens_per_frame=1, local_attn_size=3,
                         sink_size=1)
    wider = FrameKVCache(num_layers=1, batch_size=1, num_heads=1, head_dim=1, tokens_per_frame=1, local_attn_size=4)
    with pytest.raises(ValueError, match="sink_size differs: 0 vs 1"):  # same capacity, other sink layout
        sinks.splice(torch.tensor([0]), wider)
    with pytest.raises(ValueError, match="geometry differs"):
        sinks.splice(torch.tensor([0]), other)


def _stream(model, cache, sample, action):
    """Appends streamed frames (B, 1, ...) at the history noise level, each with its producing action."""
    model.forward_cached(sample, torch.full(sample.shape[:2], 50.0), action, None, cache, update_cache=True)


@pytest.mark.parametrize("sink_size, old_frames, new_frames", [
    (1, 4, 2),  # the restarted row's context fills its sinks and part of the window
    (2, 5, 1),  # shorter than the sinks: its next frames become its sinks
    (2, 1, 4),  # the batch holds fewer frames than the new context: the cache grows, the other rows move right
    (3, 2, 6),  # longer than the cache: only the newest frames are held
])
def test_a_restarted_row_with_sinks_streams_as_a_fresh_cache(sink_size, old_frames, new_frames):
    """Attention sinks survive a splice: the restarted row has its own first frames as sinks (not the old episode's)
    and, step after step past the window, gives what a fresh cache of its own context gives; the other rows give
    what they gave without the splice."""
    model = randomize(tiny_transformer()).eval()
    generator = torch.Generator().manual_seed(2)
    noise = lambda *shape: torch.randn(*shape, generator=generator)
    local = 3
    with torch.no_grad():
        batch = model.new_cache(3, local_attn_size=local, sink_size=sink_size)
        _write(model, batch, noise(3, old_frames, 4, 4, 4), torch.full((3, old_frames), 50.0), noise(3, old_frames, 2))
        for _ in range(2):
            _stream(model, batch, noise(3, 1, 4, 4, 4), noise(3, 1, 2))
        untouched = batch.reorder(torch.arange(3))
        old_sinks = batch.keys[:, 1, :, :sink_size * batch.tokens_per_frame].clone()
        alone = model.new_cache(1, local_attn_size=local, sink_size=sink_size)
        _write(model, alone, noise(1, new_frames, 4, 4, 4), torch.full((1, new_frames), 50.0), noise(1, new_frames, 2))
        batch.splice(torch.tensor([1]), alone.reorder(torch.tensor([0])))
        held, n = min(new_frames, sink_size), batch.tokens_per_frame
        torch.testing.assert_close(batch.keys[:, 1, :, :held * n], alone.keys[:, 0, :, :held * n], atol=0, rtol=0)
        assert not torch.allclose(batch.keys[:, 1, :, :held * n], old_sinks[..., :held * n, :])
        shifted = 0
        for _ in range(sink_size + local + 2):  # until the restarted row has filled its sinks and its window
            probe, probe_t, probe_action = noise(3, 1, 4, 4, 4), torch.full((3, 1), 700.0), noise(3, 1, 2)
            out = model.forward_cached(probe, probe_t, probe_action, None, batch)
            expected = model.forward_cached(probe[1:2], probe_t[1:2], probe_action[1:2], None, alone)
            torch.testing.assert_close(out[1:2], expected, atol=1e-5, rtol=1e-4)
            before = model.forward_cached(probe, probe_t, probe_action, None, untouched)
            torch.testing.assert_close(out[[0, 2]], before[[0, 2]], atol=1e-5, rtol=1e-4)
            positions = batch.frame_positions()
            if positions is not None:  # the per-row sink positions are what makes the rows agree
                moved = (positions != torch.arange(batch.num_frames)).any(dim=1)
                shifted += int(moved.sum())
                batch.frame_positions, batch._rotated = lambda: None, {}  # slot positions for every row instead
                slot_positions = model.forward_cached(probe, probe_t, probe_action, None, batch)
                del batch.frame_positions
                batch._rotated = {}
                assert not torch.allclose(slot_positions[moved], out[moved], atol=1e-3)
            sample, action = noise(3, 1, 4, 4, 4), noise(3, 1, 2)
            _stream(model, batch, sample, action)
            _stream(model, alone, sample[1:2], action[1:2])
            _stream(model, untouched, sample, action)
        assert shifted > 0 and batch.num_frames == batch.capacity and alone.num_frames == alone.capacity
        assert bool(batch.valid.all())  # by now the restarted row holds a full cache of its own frames
