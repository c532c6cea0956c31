"""Action spaces across embodiments: flat layout, per-space encoders, the mixture of action experts, a two-embodiment
pipeline and env."""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from gymnasium.utils.env_checker import check_env

from tests.conftest import randomize, tiny_autoencoder, tiny_transformer
from worldsim.data.clips import ActionNormalizer
from worldsim.data.spaces import (continuous_mask, flat_dim, flatten_action, space_from_json, space_to_json,
                                  unflatten_action)
from worldsim.envs.world_model_env import WorldModelEnv, validate_action
from worldsim.models.actions import (ActionMixtureOfExperts, build_action_encoder, load_balancing_loss,
                                    router_mutual_information)
from worldsim.models.world_model import WorldModelTransformer
from worldsim.pipelines.world_model import WorldModelPipeline

SPACES = {
    "box": gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32),
    "discrete": gym.spaces.Discrete(4, start=1),
    "multibinary": gym.spaces.MultiBinary(3),
    "multidiscrete": gym.spaces.MultiDiscrete([3, 5]),
    "dict": gym.spaces.Dict({"arm": gym.spaces.Box(0.0, 1.0, (3,), np.float32), "grip": gym.spaces.Discrete(2)}),
}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_json_and_flat_layout_round_trip(name):
    space = SPACES[name]
    description = space_to_json(space)
    assert space_from_json(description) == space
    space.seed(0)
    for _ in range(5):
        action = space.sample()
        flat = flatten_action(description, action)
        assert flat.shape == (flat_dim(description),) and flat.dtype == np.float32
        back = unflatten_action(description, flat)
        assert space.contains(back)
        assert np.allclose(flatten_action(description, back), flat)
    assert continuous_mask(description).shape == (flat_dim(description),)


def test_discrete_start_is_removed_in_the_flat_layout_and_unknown_spaces_are_named():
    description = space_to_json(SPACES["discrete"])
    assert flatten_action(description, 1).tolist() == [0.0] and unflatten_action(description, [3.0]) == 4
    with pytest.raises(NotImplementedError, match="Text"):
        space_to_json(gym.spaces.Text(5))
    with pytest.raises(ValueError, match="unknown action space type 'Graph'"):
        space_from_json({"type": "Graph"})


def test_normalizer_leaves_discrete_entries_alone():
    normalizer = ActionNormalizer([0.0, 0.0], [10.0, 3.0], continuous=[True, False])
    np.testing.assert_allclose(normalizer.normalize([[5.0, 2.0]]), [[0.0, 2.0]])
    np.testing.assert_allclose(normalizer.unnormalize(normalizer.normalize([[7.0, 1.0]])), [[7.0, 1.0]])
    assert ActionNormalizer.from_dict(normalizer.to_dict()).continuous.tolist() == [True, False]


@pytest.mark.parametrize("name", sorted(SPACES))
def test_encoder_per_space(name):
    description = space_to_json(SPACES[name])
    encoder = build_action_encoder(description, 16)
    space = SPACES[name]
    space.seed(1)
    flat = torch.tensor(np.stack([flatten_action(description, space.sample()) for _ in range(6)])).view(2, 3, -1)
    assert encoder.action_dim == flat_dim(description)
    assert encoder(flat).shape == (2, 3, 16)


def test_discrete_encoder_rejects_out_of_range_index():
    encoder = build_action_encoder({"type": "Discrete", "n": 4}, 8)
    with pytest.raises(ValueError, match="index 7 is outside"):
        encoder(torch.tensor([[[7.0]]]))


def test_mixture_of_experts_routes_top_k_and_balancing_loss():
    torch.manual_seed(0)
    experts = ActionMixtureOfExperts(16, num_experts=4, top_k=2)
    x = torch.randn(50, 16)
    out, probs, dispatch = experts(x)
    assert out.shape == x.shape and torch.all(dispatch.sum(-1) == 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(50))
    # balanced routing gives 1.0; everything on one expert gives more
    uniform = torch.full((8, 4), 0.25)
    balanced = torch.eye(4, dtype=torch.bool).repeat(2, 1)
    assert load_balancing_loss(uniform, balanced).item() == pytest.approx(1.0)
    skewed_probs = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(8, 1)
    skewed = torch.zeros(8, 4, dtype=torch.bool)
    skewed[:, 0] = True
    assert load_balancing_loss(skewed_probs, skewed).item() > 3.5
    with pytest.raises(ValueError, match="top_k"):
        ActionMixtureOfExperts(16, num_experts=2, top_k=3)


def test_router_mutual_information_rewards_per_embodiment_expert_mixes():
    ids = torch.tensor([0, 0, 1, 1])
    shared = torch.full((4, 4), 0.25)
    assert router_mutual_information(shared, ids, 2).item() == pytest.approx(0.0, abs=1e-6)
    split = torch.tensor([[0.5, 0.5, 0.0, 0.0]] * 2 + [[0.0, 0.0, 0.5, 0.5]] * 2)
    assert router_mutual_information(split, ids, 2).item() == pytest.approx(math.log(2), rel=1e-5)
    # the gradient of -MI moves the router towards the split
    logits = (0.1 * torch.randn(4, 4, generator=torch.Generator().manual_seed(0))).requires_grad_()
    before = router_mutual_information(logits.softmax(-1), ids, 2)
    (-before).backward()
    with torch.no_grad():
        after = router_mutual_information((logits - 5.0 * logits.grad).softmax(-1), ids, 2)
    assert after > before
    with pytest.raises(ValueError, match="shape"):
        router_mutual_information(shared, torch.tensor([0, 1]), 2)


EMBODIMENTS = [
    {"name": "pusht", "action_space": {"type": "Box", "low": [0.0, 0.0], "high": [512.0, 512.0], "shape": [2],
                                       "dtype": "float32"}},
    {"name": "breakout", "action_space": {"type": "Discrete", "n": 4, "start": 0}},
]


def multi_transformer() -> WorldModelTransformer:
    return randomize(tiny_transformer(embodiments=EMBODIMENTS, num_action_experts=4, action_experts_top_k=2))


def test_multi_embodiment_transformer_routes_and_round_trips(tmp_path):
    model = multi_transformer().eval()
    sample, timestep = torch.randn(2, 3, 4, 4, 4), torch.full((2, 3), 500.0)
    action = torch.tensor([[[0.1, -0.2], [0.3, 0.4], [0.0, 0.0]], [[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    embodiment = torch.tensor([0, 1])
    out = model(sample, timestep, action, embodiment=embodiment)
    probs, dispatch, ids = model.last_routing
    assert probs.shape == (4, 4) and ids.tolist() == [0, 0, 1, 1]  # T - 1 producing actions per clip
    model.save_pretrained(tmp_path / "t")
    loaded = WorldModelTransformer.from_pretrained(tmp_path / "t", use_safetensors=True).eval()
    torch.testing.assert_close(loaded(sample, timestep, action, embodiment=embodiment), out)
    # the breakout sample ignores padded entries beyond its one-entry layout
    padded = action.clone()
    padded[1, :, 1] = 9.0
    torch.testing.assert_close(model(sample, timestep, padded, embodiment=embodiment), out)
    with pytest.raises(ValueError, match="action_dim must be the widest"):
        tiny_transformer(embodiments=EMBODIMENTS, action_dim=3)
    with pytest.raises(ValueError, match="unknown embodiment 'atari'"):
        model.embodiment_index("atari")


def make_multi_pipeline() -> WorldModelPipeline:
    torch.manual_seed(0)
    metadata = {"embodiment": "pusht", "image_size": 16, "window_size": 4, "num_inference_steps": 2,
                "context_noise": 0.05, "outcome_heads": False, "fps": 10, "embodiments": {
                    "pusht": {"env_id": "gym_pusht/PushT-v0", "action_space": EMBODIMENTS[0]["action_space"],
                              "action_normalizer": {"min": [0.0, 0.0], "max": [512.0, 512.0]}},
                    "breakout": {"env_id": "ALE/Breakout-v5", "fps": 15, "action_space": EMBODIMENTS[1]["action_space"],
                                 "action_normalizer": {"min": [0.0], "max": [3.0], "continuous": [False]}}}}
    rng = np.random.default_rng(0)
    start = {"pusht.frames": torch.from_numpy(rng.integers(0, 255, (2, 2, 16, 16, 3), dtype=np.uint8)),
             "pusht.action": torch.from_numpy(rng.uniform(0, 512, (2, 1, 2)).astype(np.float32)),
             "breakout.frames": torch.from_numpy(rng.integers(0, 255, (2, 2, 16, 16, 3), dtype=np.uint8)),
             "breakout.action": torch.tensor([[[1.0]], [[3.0]]])}
    return WorldModelPipeline(tiny_autoencoder(), multi_transformer(),
                              FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000), metadata, start)


def test_multi_embodiment_pipeline_and_env(tmp_path):
    pipeline = make_multi_pipeline()
    pipeline.save_pretrained(tmp_path / "multi")
    loaded = WorldModelPipeline.from_pretrained(tmp_path / "multi")
    assert sorted(loaded.embodiments) == ["breakout", "pusht"] and loaded.embodiment("breakout").fps == 15
    frames = np.zeros((1, 2, 16, 16, 3), np.uint8)
    breakout = loaded.rollout(frames, np.array([[[2.0]]], np.float32), np.array([[[0.0], [3.0]]], np.float32),
                              embodiment="breakout", generator=torch.Generator().manual_seed(0))
    assert breakout.shape == (1, 2, 16, 16, 3)
    with pytest.raises(ValueError, match=r"expected \(1, 1, 2\)"):
        loaded.encode_context(frames, np.array([[[2.0]]], np.float32), embodiment="pusht")
    with pytest.raises(ValueError, match="unknown embodiment 'minigrid'"):
        loaded.encode_context(frames, np.array([[[2.0]]], np.float32), embodiment="minigrid")

    env = gym.make("worldsim/WorldModel-v0", model=tmp_path / "multi", embodiment="breakout")
    assert env.action_space == gym.spaces.Discrete(4) and env.metadata["render_fps"] == 15
    check_env(env.unwrapped, skip_render_check=True)
    observation, info = env.reset(seed=0)
    assert info["embodiment"] == "breakout"
    before = env.unwrapped._state
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(4)
    with pytest.raises(ValueError, match="not integer-valued"):
        env.step(1.5)
    assert env.unwrapped._state is before and not before.is_stale
    env.step(np.int64(2))
    assert WorldModelEnv(loaded, embodiment="pusht").action_space.shape == (2,)


def test_validate_action_for_dict_and_multidiscrete():
    space = SPACES["dict"]
    good = validate_action({"arm": [0.5, 0.5, 0.5], "grip": 1}, space)
    assert good["grip"] == 1 and good["arm"].dtype == np.float32
    with pytest.raises(ValueError, match="keys"):
        validate_action({"arm": [0.5, 0.5, 0.5]}, space)
    with pytest.raises(ValueError, match="outside the action space"):
        validate_action([3, 0], SPACES["multidiscrete"])


def test_sensitivity_scoring_passes_a_follower_and_fails_an_action_blind_model():
    from worldsim.evaluation.sensitivity import score_branches

    rng = np.random.default_rng(0)
    real = rng.uniform(0, 1, (4, 12, 2)).cumsum(axis=1) / 12  # four diverging real futures
    follower = real + rng.normal(0, 0.01, real.shape)
    correct, imagined_spread, real_spread = score_branches(follower, real)
    assert correct.all() and imagined_spread == pytest.approx(real_spread, rel=0.2)
    blind = np.repeat(real.mean(axis=0, keepdims=True), 4, axis=0)  # the same future whatever the actions
    correct, imagined_spread, _ = score_branches(blind, real)
    assert correct.mean() <= 0.5 and imagined_spread == 0.0
    # branches whose real futures coincide are interchangeable
    twins = np.stack([real[0], real[0], real[2], real[3]])
    correct, _, _ = score_branches(np.stack([real[0], real[0], real[2], real[3]]), twins)
    assert correct.all()
    # a branch whose entity vanished is not following, and does not make the spread infinite
    vanished = follower.copy()
    vanished[1] = np.nan
    correct, imagined_spread, _ = score_branches(vanished, real)
    assert correct.tolist() == [True, False, True, True] and np.isfinite(imagined_spread)


def test_entity_locators_find_paddle_and_minigrid_agent():
    from worldsim.embodiments import make_embodiment

    locate_breakout_paddle = make_embodiment("breakout").locate_controlled
    locate_minigrid_agent = make_embodiment("minigrid").locate_controlled

    frame = np.zeros((64, 64, 3), np.uint8)
    frame[58:60, 40:46] = (200, 72, 72)  # paddle
    frame[10:12, 5:20] = (200, 72, 72)  # a brick row of the same colour, far above
    assert locate_breakout_paddle(frame)[0] == pytest.approx(43 / 64, abs=1e-6)  # centre of columns 40-45
    assert np.isnan(locate_breakout_paddle(np.zeros((64, 64, 3), np.uint8))[0])
    grid = np.full((64, 64, 3), 100, np.uint8)
    grid[8:14, 16:22] = (255, 0, 0)  # a red blob in the cell of column 2, row 1
    np.testing.assert_allclose(locate_minigrid_agent(grid), [19 / 64, 11 / 64], atol=1 / 64)


def test_router_statistics_report_load_per_embodiment():
    from worldsim.evaluation.router import router_report, router_statistics

    report = router_report(torch.tensor([[10.0, 0.0, 10.0, 0.0], [0.0, 5.0, 0.0, 5.0]]), ["a", "b"])
    assert report["expert_load"]["a"] == [0.5, 0.0, 0.5, 0.0] and report["dead_experts"] == []
    assert report["total_variation"]["a|b"] == 1.0
    assert report["overall_load"] == [0.25, 0.25, 0.25, 0.25]
    # an expert that gets 0.5% of one embodiment's actions and none of the other's is dead
    starved = router_report(torch.tensor([[100.0, 99.0, 0.0, 1.0], [50.0, 50.0, 0.0, 0.0]]), ["a", "b"])
    assert starved["dead_experts"] == [2, 3]

    class Actions:  # anything with an ``action`` array works as a dataset here
        def __init__(self, action):
            self.action = action

    pipeline = make_multi_pipeline()
    stats = router_statistics(pipeline, {"pusht": Actions(np.random.default_rng(0).uniform(0, 512, (40, 2))),
                                         "breakout": Actions(np.arange(40.0)[:, None] % 4)})
    assert stats["dispatches"] == {"pusht": 80, "breakout": 80}  # top-2 of 4 experts
    with pytest.raises(ValueError, match="expects 1"):
        router_statistics(pipeline, {"breakout": Actions(np.zeros((4, 2)))})


def test_branch_actions_random_walk_from_the_last_action_and_held():
    from worldsim.evaluation.sensitivity import sample_branch_actions

    box = space_to_json(gym.spaces.Box(0.0, 512.0, (2,), np.float32))
    sequences = sample_branch_actions(box, 3, 10, np.random.default_rng(0), hold=4, start=np.array([500.0, 10.0]))
    array = np.asarray(sequences)
    assert array.shape == (3, 10, 2) and array.min() >= 0 and array.max() <= 512
    assert np.all(array[:, 0] == array[:, 3]) and np.all(np.abs(array[:, 0] - [500.0, 10.0]) < 200)
    assert len({tuple(seq[0]) for seq in sequences}) == 3  # the branches differ
    discrete = sample_branch_actions({"type": "Discrete", "n": 4, "start": 0}, 2, 8, np.random.default_rng(1))
    assert all(0 <= a < 4 for seq in discrete for a in seq)
