"""Steering in the real env (``worldsim steer-eval``): does imagining K candidates make a stochastic policy better?

Protocol (any embodiment whose plug-in has a steering policy; :class:`~worldsim.embodiments.EmbodimentPlugin`):
from each initial state (the plug-in's starts, then its context steps, as in :mod:`worldsim.evaluation.rank`), the
plug-in's stochastic chunk policy (:meth:`~worldsim.embodiments.EmbodimentPlugin.steering_policy`) and its steered
versions (:class:`~worldsim.steering.SteeredPolicy` with K candidates) each run ``horizon`` real steps with the same
base-policy seed. Per K: the mean episode value (the plug-in's, as in ranking) and success rate with bootstrap 95%
intervals, the gain over the base policy with a paired bootstrap interval (the same states), and the wall time per
steering decision. K = 1 is the base policy itself (nothing imagined).

The optional oracle (``oracle_follow > 0``, for plug-ins that can snapshot and restore their env's state) says
where a missing gain is lost. At every steering decision each candidate is also executed in a second real env set to
the current state (:meth:`~worldsim.embodiments.EmbodimentPlugin.get_state` / ``set_state``), followed by
``oracle_follow`` steps of the plug-in's follow-up policy (the base policy's mode), and its real outcome (the value of
those steps) is recorded. For a predictor that scores by the predicted state, the outcome is instead the same measure
of the real states over the chunk and the predictor's own follow-up steps (``settings["oracle_outcome"]`` says so).
Per decision: the oracle gain (best real outcome minus the candidates' mean: what a perfect predictor would win), the
captured gain (the chosen candidate's real outcome minus the mean) and the Spearman correlation between the predicted
scores and the real outcomes. This is best-of-N selection with a learned simulator, as in runtime steering of VLA
policies with a world model and a judge.

Models of several cameras, with a state predictor or conditioned on a task (e.g. Meta-World) are evaluated the same
way: every real observation is seen in the model's layout (:meth:`~worldsim.envs.observations.ObservationLayout.
from_real`: the base and follow-up policies get a Dict of the camera views and ``observation.state``, the predictor
the views side by side and the real state), the env is the plug-in's ``env_id`` and the model imagines its task.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr
import torch
from tqdm.auto import tqdm

from worldsim.data.spaces import flatten_action, space_to_json, unflatten_action
from worldsim.evaluation.policy_adapters import as_policy
from worldsim.evaluation.report import (check_contiguous, check_mergeable, check_new_states, format_interval,
                                        markdown_lines, mean_interval, pyplot, save_figure)
from worldsim.steering.policy import SteeredPolicy
from worldsim.steering.predictor import reduce_future
from worldsim.utils.digest import modules_sha256
from worldsim.utils.files import read_json_object, write_json


class FlatChunks:
    """A chunk policy in the flat action layout: ``base(observation) -> (H, *action_shape)`` env actions becomes
    ``(H, A)`` float32 flat actions (:func:`~worldsim.data.spaces.flatten_action`), what
    :class:`~worldsim.steering.SteeredPolicy` and the predictor compare. The observation (a frame or a Dict) is
    passed through as it is."""

    def __init__(self, base, space: dict):
        self.base, self.space = base, space

    def reset(self) -> None:
        if hasattr(self.base, "reset"):
            self.base.reset()

    def __call__(self, observation) -> np.ndarray:
        return np.stack([flatten_action(self.space, action) for action in self.base(observation)]).astype(np.float32)


def _aggregate(plugin, step_values: list[float]) -> float:
    return max(step_values) if plugin.value_aggregation == "max" else float(np.sum(step_values))


def _with_env_id(env_id: str | None) -> dict:
    """``{"env_id": env_id}``, or nothing for the default env: plug-ins of one env define ``steering_policy`` and
    ``follow_policy`` without the argument."""
    return {} if env_id is None else {"env_id": env_id}


def follow_policy_for(plugin, env_id: str | None = None):
    """The plug-in's follow-up policy (:meth:`~worldsim.embodiments.EmbodimentPlugin.follow_policy`) for ``env_id``
    (passed only when not None).

    Raises:
        NotImplementedError: the plug-in has none.
    """
    return plugin.follow_policy(**_with_env_id(env_id))


def _oracle_outcomes(plugin, env, probe, candidates: np.ndarray, follow: int, layout, space: dict,
                     env_id: str | None = None, state_value=None, aggregate: str = "last") -> np.ndarray:
    """Real outcome `(K,)` float64 of each flat candidate chunk of ``candidates`` `(K, H, A)` float32 from ``env``'s
    current state (see the module docstring); the follow-up policy observes ``probe``'s observations in the model's
    ``layout`` (a frame or a Dict). With ``state_value`` (``(T, S) float32 -> (T,)``: a predictor that scores by the
    state) the outcome is that measure of the real states the chunk and its ``follow`` follow-up steps pass through,
    reduced by ``aggregate`` (:func:`~worldsim.steering.predictor.reduce_future`) as the predictor reduces the
    predicted ones; otherwise it is the plug-in's value of the steps."""
    outcomes = []
    state = plugin.get_state(env)
    for chunk in candidates:
        observation = plugin.set_state(probe, state)
        steps, states = [], []
        for action in chunk:
            observation, reward, terminated, _, info = probe.step(unflatten_action(space, action))
            steps.append(plugin.step_value(float(reward), bool(terminated), info))
            if state_value is not None:
                states.append(layout.from_real(observation, probe)[2])
            if terminated:
                break
        follower = as_policy(follow_policy_for(plugin, env_id), probe.action_space.shape)
        follower.reset(1)
        for _ in range(follow if not terminated else 0):
            seen = layout.from_real(observation, probe)[0]
            observation, reward, terminated, _, info = probe.step(follower.act(_batched(seen))[0])
            steps.append(plugin.step_value(float(reward), bool(terminated), info))
            if state_value is not None:
                states.append(layout.from_real(observation, probe)[2])
            if terminated:
                break
        if state_value is None:
            outcomes.append(_aggregate(plugin, steps))
            continue
        valued = np.asarray(state_value(np.stack(states)), dtype=np.float64)
        outcomes.append(float(reduce_future(valued[None], aggregate)[0]))
    return np.asarray(outcomes)


def steer_evaluate(predictor, candidates: list[int], num_states: int = 100, horizon: int = 64, num_context: int = 4,
                   seed: int = 0, base_noise: float | None = None, chunk_length: int = 8, oracle_follow: int = 0,
                   progress: bool = True, progress_dir: str | Path | None = None, resume: bool = False,
                   embodiment_plugin=None, env_id: str | None = None) -> dict:
    """Runs the base and steered policies in the real env of the predictor's embodiment (see the module docstring).

    Every real observation is converted to the model's layout (:func:`~worldsim.evaluation.rank.model_layout`,
    :meth:`~worldsim.envs.observations.ObservationLayout.from_real`): the base policy and the oracle's follow-up policy
    observe what the model's imagined env observes (a frame, or a Dict of the camera views at the model's size and
    ``observation.state``), and the predictor is given the model's frames (views side by side) and the real states.

    Args:
        predictor: :class:`~worldsim.steering.OutcomePredictor` (its scorer decides; its embodiment picks the
            plug-in). For a task-conditioned model its :attr:`~worldsim.steering.OutcomePredictor.task` is set to the
            env's task (:meth:`~worldsim.embodiments.EmbodimentPlugin.task_text`).
        candidates: the K values to evaluate; K = 1 (added when missing) is the base policy.
        num_states: initial states (the plug-in's starts ``seed .. seed + num_states - 1``).
        horizon: real env steps per episode.
        num_context: real frames the predictor is given (the first ``num_context - 1`` steps are the plug-in's
            context steps).
        seed: first start.
        base_noise, chunk_length: the base policy (the plug-in's
            :meth:`~worldsim.embodiments.EmbodimentPlugin.steering_policy`; ``base_noise`` None: the plug-in's
            :attr:`~worldsim.embodiments.EmbodimentPlugin.steering_noise`).
        oracle_follow: > 0 also measures every candidate's real outcome at each decision (the follow-up policy then
            runs this many more steps); 0 skips it (it costs K real rollouts per decision). With a predictor that
            scores by the state (``value_key="state_progress"``) the real outcome is its ``state_value`` of the real
            states, reduced by its ``aggregate``, over the chunk and the predictor's own ``follow_steps`` (the
            future it imagined), whatever the number given here.
        progress: show a progress bar per K.
        progress_dir: folder where the run saves its progress after every finished episode (``steer-progress.json``,
            and ``steer-progress-video.safetensors`` once the video's episode is done), so that an interrupted run
            loses at most one episode; the files are removed when the run finishes. ``None`` saves nothing.
        resume: continue the unfinished run saved in ``progress_dir`` (its finished episodes are kept, the
            imagination noise generator is restored, and the rest runs as if never interrupted: the report equals an
            uninterrupted run's). With no saved run there, starts from the beginning.
        embodiment_plugin: the plug-in to use (default: the one serving the predictor's embodiment,
            :func:`~worldsim.embodiments.resolve_embodiment`).
        env_id: the plug-in's env (a task of a multi-task plug-in such as Meta-World; None: its default). It is made
            with ``plugin.make_env(env_id)``, and given to the plug-in's ``steering_policy`` and ``follow_policy``
            when not None.

    Returns:
        ``{"results": {K: {"values": [...], "successes": [...], "value", "success", "gain": {mean, low, high},
        "seconds_per_decision", "oracle": {...} | None}}, "settings": {...}, "video": {"futures": (K, H, Hf, Wf, 3),
        "best": int, "real": (H, Hf, Wf, 3)} | None}``; ``video`` is the first decision of the largest K on the first
        state (its imagined candidates and what really happened when the chosen one was executed, both in the
        model's frames). ``settings`` records ``env_id`` (the default env's id when None) and ``task`` (what a
        task-conditioned model imagined; None otherwise).

    Raises:
        ValueError: a K < 1, ``num_states < 1``, ``horizon < 1`` or ``num_context < 2``; an env id the plug-in
            refuses; a task-conditioned model that does not know the env's task; or, with ``resume``, a saved run of
            other settings, K values or model weights (the message names what differs).
        NotImplementedError: the plug-in has no steering policy, or (with ``oracle_follow``) no follow-up policy or
            cannot restore states.
        FileExistsError: ``progress_dir`` holds an unfinished run and ``resume`` is False (nothing is overwritten).
    """
    from worldsim.embodiments import resolve_embodiment
    from worldsim.evaluation.rank import model_layout

    if not candidates or min(candidates) < 1:
        raise ValueError(f"candidates must be K values >= 1, got {candidates}")
    if num_states < 1 or horizon < 1 or num_context < 2:
        raise ValueError(f"need num_states >= 1, horizon >= 1, num_context >= 2; got {num_states}, {horizon}, "
                         f"{num_context}")
    plugin = embodiment_plugin or resolve_embodiment(predictor.pipeline, predictor.embodiment)[1]
    base_noise = plugin.steering_noise if base_noise is None else base_noise
    chosen = _with_env_id(env_id)
    plugin.steering_policy(base_noise, chunk_length, seed, **chosen)  # a plug-in without one fails here, before any run
    if oracle_follow > 0:
        follow_policy_for(plugin, env_id)
    task = None
    if predictor.is_task_conditioned:
        task = plugin.task_text(env_id)
        predictor.task = task  # the model imagines the env's task (an unknown one fails here)
    layout = model_layout(predictor.pipeline, predictor.embodiment)
    candidates = sorted(set(candidates) | {1})
    settings = {"num_states": num_states, "horizon": horizon, "num_context": num_context, "seed": seed,
                "base_noise": base_noise, "chunk_length": chunk_length, "oracle_follow": oracle_follow,
                "scorer": _scorer_label(predictor),
                "follow_steps": predictor.follow_steps, "samples": predictor.num_samples,
                "sampler": {"num_inference_steps": predictor.num_inference_steps,
                            "timestep_spacing": predictor.timestep_spacing},
                "decoder": predictor.pipeline.decoder_name,
                "value": plugin.value_description}
    if predictor.pipeline.quantization:  # only then, so the settings of earlier runs still match on --resume
        settings["quantization"] = predictor.pipeline.quantization
    settings["embodiment"] = plugin.name
    settings["env_id"] = env_id or (plugin.env_ids[0] if plugin.env_ids else None)
    settings["task"] = task
    oracle_steps, by_state = oracle_follow, {}
    if oracle_follow > 0 and getattr(predictor, "state_value", None) is not None:
        # a predictor that scores by the state: the oracle scores the real future as the predictor scores the
        # imagined one, the chunk and as many follow-up steps as it imagines (recorded only then, so that the
        # settings of other runs still match on --resume and steer-report refuses to mix the two kinds)
        oracle_steps = predictor.follow_steps
        by_state = {"state_value": predictor.state_value, "aggregate": predictor.aggregate}
        settings["oracle_outcome"] = (f"real state ({predictor.aggregate} {predictor.value_key} over the chunk and "
                                      f"{oracle_steps} follow-up steps)")
    saved = _SteerProgress(progress_dir, predictor, settings, candidates, resume)
    env, probe = plugin.make_env(env_id), plugin.make_env(env_id) if oracle_follow > 0 else None
    if probe is not None:  # reset once, so that Gymnasium's wrappers let the restored states step
        plugin.reset_start(probe, seed)
    space = space_to_json(env.action_space)
    video = saved.video
    try:
        for count in candidates:
            run = saved.runs[count]
            values, successes, decision_seconds, oracle = (run["values"], run["successes"], run["decision_seconds"],
                                                           run["oracle"])
            states = range(seed + len(values), seed + num_states)
            for state in tqdm(states, desc=f"steer-eval K={count}", disable=not progress, initial=len(values),
                              total=num_states):
                base = FlatChunks(plugin.steering_policy(base_noise, chunk_length, seed=state, **chosen), space)
                policy = SteeredPolicy(base, predictor, num_candidates=count, context=num_context) if count > 1 \
                    else None
                observation, info = plugin.reset_start(env, state)
                context = plugin.context_policy(env)
                for _ in range(num_context - 1):  # the shared start: the plug-in's context steps
                    action = context(observation, info)
                    if policy is not None:  # the policy sees the context it lives through
                        _, frame, real_state = layout.from_real(observation, env)
                        policy.frames.append(frame)
                        policy.states.append(real_state)
                        policy.actions.append(flatten_action(space, action))
                    observation, _, _, _, info = env.step(action)
                steps, success, queue, recording = [], False, [], None
                for _ in range(horizon):
                    seen, frame, real_state = layout.from_real(observation, env)
                    if policy is None:
                        queue = queue or list(base(seen))
                        action = queue.pop(0)
                    else:
                        started, decided = time.perf_counter(), policy.last_decision
                        action = policy.act(seen, frame=frame, state=real_state)
                        if policy.last_decision is not decided:
                            decision_seconds.append(time.perf_counter() - started)
                            decision = policy.last_decision
                            if oracle_follow > 0:
                                real = _oracle_outcomes(plugin, env, probe, decision["candidates"], oracle_steps,
                                                        layout, space, env_id, **by_state)
                                oracle["oracle"].append(float(real.max() - real.mean()))
                                oracle["captured"].append(float(real[decision["best"]] - real.mean()))
                                if real.std() > 1e-6 and np.std(decision["scores"]) > 0:
                                    oracle["spearman"].append(float(spearmanr(decision["scores"], real)[0]))
                            if video is None and count == candidates[-1] and state == seed:
                                prediction = predictor.last_prediction
                                video = {"futures": prediction.frames, "best": prediction.best, "real": []}
                                recording = video["real"]
                    observation, reward, terminated, truncated, info = env.step(unflatten_action(space, action))
                    if recording is not None and len(recording) < video["futures"].shape[1]:
                        recording.append(layout.from_real(observation, env)[1])
                    steps.append(plugin.step_value(float(reward), bool(terminated), info))
                    success = success or plugin.is_success(steps[-1], info)
                    if terminated or truncated:
                        break
                if recording is not None:
                    video["real"] = np.stack(recording) if recording else None
                values.append(_aggregate(plugin, steps))
                successes.append(float(success))
                saved.save(video)  # only finished episodes reach the file: an interruption discards this one's part
    finally:
        env.close()
        if probe is not None:
            probe.close()
    results = {count: _summarise_run(run) for count, run in saved.runs.items()}
    _add_intervals(results)
    saved.finish()
    return {"results": results, "settings": {**settings, "date": time.strftime("%Y-%m-%d")}, "video": video}


def _scorer_label(predictor) -> str:
    """How the predictor scores, as the settings record it: ``"user scorer"``, ``"predicted state (<aggregate>
    state_progress)"`` or ``"heads (<aggregate>)"`` (with the valued head output when it is not the reward, so reports
    of reward scoring read as before)."""
    if predictor.scorer is not None:
        return "user scorer"
    valued = getattr(predictor, "value_key", "reward")
    if getattr(predictor, "state_value", None) is not None:
        return f"predicted state ({predictor.aggregate} {valued})"
    if predictor.aggregate == "value" or valued == "reward":
        return f"heads ({predictor.aggregate})"
    return f"heads ({predictor.aggregate} {valued})"


def _batched(observation):
    """One env's observation as a batch of one (an array, or a dict of arrays)."""
    if isinstance(observation, dict):
        return {key: np.asarray(value)[None] for key, value in observation.items()}
    return np.asarray(observation)[None]


def _summarise_run(run: dict) -> dict:
    """One K's report entry from its per-episode lists (before the intervals are added)."""
    seconds, oracle = run["decision_seconds"], run["oracle"]
    return {"values": list(run["values"]), "successes": list(run["successes"]),
            "seconds_per_decision": float(np.median(seconds)) if seconds else 0.0,
            "oracle": {"decisions": len(oracle["oracle"]),
                       "oracle_gain": float(np.mean(oracle["oracle"])),
                       "captured_gain": float(np.mean(oracle["captured"])),
                       "spearman": float(np.mean(oracle["spearman"])) if oracle["spearman"] else float("nan")}
            if oracle["oracle"] else None}


class _SteerProgress:
    """The saved progress of one steer-eval run (see :func:`steer_evaluate`'s ``progress_dir`` and ``resume``).

    Holds per K the finished episodes' values, successes, decision times and oracle figures (``runs``), and the video
    once its episode is done; :meth:`save` writes them with the imagination generator's state after each episode
    (JSON through an atomic rename; the video as safetensors, written once). A saved run is tied to its settings, K
    values and a SHA-256 of the model's weights, so a resume cannot mix runs.
    """

    FORMAT = "worldsim steer-eval progress 1"
    VIDEO = "steer-progress-video.safetensors"

    def __init__(self, folder, predictor, settings: dict, candidates: list[int], resume: bool):
        self.folder, self.predictor = None if folder is None else Path(folder), predictor
        self.key = {"format": self.FORMAT, "settings": settings, "candidates": candidates,
                    "model_sha256": _weights_sha256(predictor.pipeline) if folder is not None else None}
        self.runs = {count: {"values": [], "successes": [], "decision_seconds": [],
                             "oracle": {"oracle": [], "captured": [], "spearman": []}} for count in candidates}
        self.video, self.video_saved = None, False
        if self.folder is None or not self.path.exists():
            return
        saved = read_json_object(self.path)
        done = ", ".join(f"K={k}: {len(run['values'])}" for k, run in saved.get("runs", {}).items())
        if not resume:
            raise FileExistsError(f"{self.path} holds an unfinished steer-eval run (episodes done per K: {done}); "
                                  f"resume it (--resume) or delete the file to start over")
        differing = sorted(key for key in self.key if json.dumps(saved.get(key), sort_keys=True)
                           != json.dumps(self.key[key], sort_keys=True))
        if differing:
            details = "; ".join(f"{key}: saved {saved.get(key)!r}, now {self.key[key]!r}" for key in differing)
            raise ValueError(f"{self.path} is a run of other {', '.join(differing)} ({details}); resume it with the "
                             f"same command, or delete it to start over")
        if not isinstance(saved.get("runs"), dict) or "generator_state" not in saved or "video" not in saved:
            raise ValueError(f"{self.path} is damaged (it lacks the episodes, the generator state or the video "
                             f"entry); delete it to start over")
        self.runs = {int(count): run for count, run in saved["runs"].items()}
        predictor.generator.set_state(torch.tensor(list(base64.b64decode(saved["generator_state"])),
                                                   dtype=torch.uint8))
        if saved["video"] is not None:
            tensors = load_file(self.folder / self.VIDEO)
            self.video = {"futures": tensors["futures"].numpy(), "best": int(saved["video"]["best"]),
                          "real": tensors["real"].numpy() if "real" in tensors else None}
            self.video_saved = True

    @property
    def path(self) -> Path:
        return self.folder / "steer-progress.json"

    def save(self, video: dict | None) -> None:
        """Writes the finished episodes, the generator state and (once, when its episode is done) the video."""
        if self.folder is None:
            return
        if video is not None and isinstance(video["real"], list):
            video = None  # the video's episode is still running: nothing of it is saved yet
        video_file = self.folder / self.VIDEO
        if video is not None and not self.video_saved:  # (a file left by an older run is overwritten)
            tensors = {"futures": torch.from_numpy(np.ascontiguousarray(video["futures"]))}
            if video["real"] is not None:
                tensors["real"] = torch.from_numpy(np.ascontiguousarray(video["real"]))
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary = video_file.with_name(video_file.name + ".tmp")
            save_file(tensors, temporary)
            temporary.replace(video_file)
            self.video_saved = True
        state = base64.b64encode(self.predictor.generator.get_state().numpy().tobytes()).decode("ascii")
        write_json(self.path, {**self.key, "runs": {str(k): run for k, run in self.runs.items()},
                               "generator_state": state,
                               "video": None if video is None else {"best": int(video["best"])}})

    def finish(self) -> None:
        """Removes the saved progress (the run is complete; its report holds everything)."""
        if self.folder is not None:
            for path in (self.path, self.folder / self.VIDEO):
                path.unlink(missing_ok=True)


def _weights_sha256(pipeline) -> str:
    """SHA-256 of the pipeline's weights (transformer, every embodiment's outcome heads, autoencoder, light decoder),
    names included (:func:`~worldsim.utils.digest.modules_sha256`)."""
    heads = [pipeline.outcome_heads[name] for name in sorted(pipeline.outcome_heads, key=str)]
    return modules_sha256(pipeline.transformer, *heads, pipeline.autoencoder, pipeline.decoder)


def _add_intervals(results: dict) -> None:
    """Sets each K's ``value`` and ``success`` (bootstrap 95% intervals of the means over states) and ``gain`` and
    ``success_gain`` (paired bootstrap intervals against K = 1: the same states)."""
    base_values, base_successes = np.asarray(results[1]["values"]), np.asarray(results[1]["successes"])
    for entry in results.values():
        entry["value"], entry["success"] = mean_interval(entry["values"]), mean_interval(entry["successes"])
        entry["gain"] = mean_interval(np.asarray(entry["values"]) - base_values)
        entry["success_gain"] = mean_interval(np.asarray(entry["successes"]) - base_successes)


def _same_values(first, second) -> bool:
    """Per-state values of two runs agree: same length, equal up to float round-off (the physics engine's sums
    differ in the last bits between processes)."""
    return len(first) == len(second) and bool(np.allclose(first, second, rtol=0.0, atol=1e-9))


# settings that may differ between runs of one protocol on other initial states
_RUN_KEYS = ("seed", "num_states", "date")
_SETTING_DEFAULTS = {"decoder": "full"}  # reports written before the light decoder existed ran the full one
# reports written before embodiment plug-ins, or before env ids and tasks, do not name them
_COMPARED_IF_PRESENT = ("embodiment", "env_id", "task")


def merge_steer_reports(reports: list[dict]) -> dict:
    """Merges ``steer-eval`` reports of other K values or other initial states, run separately (other processes,
    machines or days).

    A K = 16 run costs as much as K = 1 to 8 together, so a compute-scaling curve is often built in pieces, by K
    (``--candidates``) and by initial states (``--seed``/``--num-states``: states 0-49 in one run, 50-99 in
    another). The pieces are only comparable when they ran the same protocol: the same settings (horizon, base
    policy, scorer, follow-up, samples, sampler, frame decoder; the seed, state count and date may differ) and the
    same model. A state two pieces both ran must have the same values in both (K = 1, the base policy, is in every
    piece: this checks the pieces are of one protocol); two pieces either cover the same states or disjoint ones.
    The merged states must be contiguous and every K must cover all of them, so the gains stay paired. Intervals are
    recomputed from the per-state values; a K's seconds per decision is the state-weighted mean of its pieces'
    medians, its oracle figures the decision-weighted means.

    Args:
        reports: dicts as ``steer_evaluate`` returns them or as ``worldsim steer-eval`` writes ``report.json``
            (K keys as ints or strings; the optional ``model`` entry is compared too).

    Returns:
        ``{"results": {K: {...}}, "settings": {...}, "model": ... (when given)}`` with int K keys, ``settings``
        ``seed`` and ``num_states`` giving the merged states, ``date`` listing the runs' dates, and no video.

    Raises:
        ValueError: fewer than two reports; settings or models that differ (names the key and both values); a report
            without K = 1; a K whose value count is not the report's state count; values of one K and state that
            differ by more than float round-off between reports (for K = 1: not the same base policy); state ranges
            that overlap in part; merged states with a gap; a K that does not cover every merged state.
    """
    check_mergeable(reports, _RUN_KEYS, _COMPARED_IF_PRESENT, _SETTING_DEFAULTS)
    first = reports[0]
    table: dict[int, dict[int, tuple[float, float]]] = {}  # K -> state -> (value, success)
    pieces: dict[int, list[tuple[int, dict]]] = {}  # K -> (state count, entry) of each distinct piece
    for index, report in enumerate(reports):
        if first.get("model") != report.get("model"):
            raise ValueError(f"report {index} is of model {report.get('model')!r}, report 0 of {first.get('model')!r}")
        results = {int(count): entry for count, entry in report["results"].items()}
        if 1 not in results:
            raise ValueError(f"report {index} has no K = 1 (base policy) results: K = {sorted(results)}")
        seed, size = int(report["settings"].get("seed", 0)), len(results[1]["values"])
        for count, entry in sorted(results.items()):
            if len(entry["values"]) != size:
                raise ValueError(f"report {index}: K = {count} has {len(entry['values'])} values, K = 1 has {size}")
            known = table.setdefault(count, {})
            if check_new_states(known, seed, seed + size, index, repeat_ok=True):
                # the same states run again (K = 1 is in every report): counted once, if the values agree
                if not _same_values([known[state][0] for state in range(seed, seed + size)], entry["values"]):
                    raise ValueError(f"K = {count} differs between report {index} and an earlier one on states "
                                     f"{seed}-{seed + size - 1}" + (" (the base policy's real values: not the same "
                                                                    "states or base policy)" if count == 1 else ""))
                continue
            for offset, state in enumerate(range(seed, seed + size)):
                known[state] = (float(entry["values"][offset]), float(entry["successes"][offset]))
            pieces.setdefault(count, []).append((size, entry))
    states = sorted(table[1])
    check_contiguous(states)
    merged: dict[int, dict] = {}
    for count, known in sorted(table.items()):
        if sorted(known) != states:
            raise ValueError(f"K = {count} covers {len(known)} of the {len(states)} merged states: every K must run "
                             f"on all of them (the gains are paired with K = 1)")
        merged[count] = {"values": [known[state][0] for state in states],
                         "successes": [known[state][1] for state in states],
                         **_merge_timing_and_oracle(pieces[count])}
    _add_intervals(merged)
    dates = sorted({str(report["settings"].get("date")) for report in reports})
    settings = {**first["settings"], "seed": states[0], "num_states": len(states), "date": ", ".join(dates)}
    out = {"results": merged, "settings": settings}
    if "model" in first:
        out["model"] = first["model"]
    return out


def _merge_timing_and_oracle(pieces: list[tuple[int, dict]]) -> dict:
    """Seconds per decision (state-weighted) and oracle figures (decision-weighted) of one K's pieces."""
    sizes = np.asarray([size for size, _ in pieces], dtype=float)
    seconds = float(np.average([entry["seconds_per_decision"] for _, entry in pieces], weights=sizes))
    oracles = [entry.get("oracle") for _, entry in pieces]
    if any(oracle is None for oracle in oracles):
        return {"seconds_per_decision": seconds, "oracle": None}
    decisions = np.asarray([oracle["decisions"] for oracle in oracles], dtype=float)
    oracle = {"decisions": int(decisions.sum())}
    for key in ("oracle_gain", "captured_gain", "spearman"):
        values = np.asarray([entry[key] for entry in oracles], dtype=float)
        defined = np.isfinite(values) & (decisions > 0)
        oracle[key] = float(np.average(values[defined], weights=decisions[defined])) if defined.any() \
            else float("nan")
    return {"seconds_per_decision": seconds, "oracle": oracle}


def steer_table(report: dict) -> str:
    """A markdown table: one row per K with value, success, gain (95% intervals), seconds per decision, oracle."""
    columns = ["K", "mean episode value [95% CI]", "success [95% CI]", "gain over K=1 [paired 95% CI]", "s / decision",
               "oracle gain / captured / Spearman"]
    rows = []
    for count, entry in sorted(report["results"].items(), key=lambda item: int(item[0])):
        o = entry.get("oracle")
        oracle = f"{o['oracle_gain']:.3f} / {o['captured_gain']:.3f} / {o['spearman']:.2f}" if o else "-"
        rows.append([str(count), format_interval(entry["value"]), format_interval(entry["success"], ".2f"),
                     format_interval(entry["gain"], "+.3f"), f"{entry['seconds_per_decision']:.2f}", oracle])
    return "\n".join(markdown_lines(columns, rows))


def steering_video_frames(futures: np.ndarray, best: int, real: np.ndarray | None, columns: int = 6) -> np.ndarray:
    """Video frames `(H, rows * (S + 4), columns * (S + 4), 3)` uint8 of one steering decision.

    The K imagined candidates in a grid (the chosen one framed green, the others grey), then the real outcome of
    executing the chosen chunk (framed white; its last frame held if the episode ended early); empty cells white.

    Args:
        futures: `(K, H, S, S, 3)` uint8 imagined candidates.
        best: index of the chosen candidate.
        real: `(T <= H, S, S, 3)` uint8 real frames after the chosen chunk's actions, or None.
        columns: grid width in tiles.
    """
    count, length = futures.shape[:2]
    border = 2

    def framed(frames, colour):
        out = np.pad(frames, ((0, 0), (border, border), (border, border), (0, 0)))
        out[:, :border], out[:, -border:], out[:, :, :border], out[:, :, -border:] = colour, colour, colour, colour
        return out

    tiles = [framed(futures[k], (0, 200, 0) if k == best else (90, 90, 90)) for k in range(count)]
    if real is not None and len(real):
        real = real[:length]
        if len(real) < length:
            real = np.concatenate([real, np.repeat(real[-1:], length - len(real), axis=0)])
        tiles.append(framed(real, (255, 255, 255)))
    columns = min(columns, len(tiles))
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i:i + columns], axis=2) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=1).astype(np.uint8)


def write_steer_report(report: dict, out_dir, fps: int = 10) -> dict:
    """Writes ``gain.png`` (gain vs K and vs wall time per decision, with intervals) and ``steered.mp4``.

    Returns:
        ``{"plot": path, "video": path | None}``.
    """
    from worldsim.utils.video import write_video

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    counts = sorted(int(k) for k in report["results"])
    entries = [report["results"][k] if k in report["results"] else report["results"][str(k)] for k in counts]
    gains = np.array([[e["gain"]["mean"], e["gain"]["low"], e["gain"]["high"]] for e in entries])
    seconds = [e["seconds_per_decision"] for e in entries]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, x, label in ((axes[0], counts, "candidates K"), (axes[1], seconds, "seconds per decision")):
        axis.errorbar(x, gains[:, 0], yerr=[gains[:, 0] - gains[:, 1], gains[:, 2] - gains[:, 0]], fmt="o-",
                      capsize=3)
        axis.axhline(0.0, color="k", linestyle=":", linewidth=1)
        axis.set(xlabel=label, ylabel="gain in mean episode value over the base policy")
        axis.grid(alpha=0.3)
    axes[0].set_xscale("log", base=2)
    settings = report["settings"]
    figure.suptitle(f"steering in the real env{' (' + settings['embodiment'] + ')' if 'embodiment' in settings else ''}: {settings['num_states']} states, horizon {settings['horizon']}, "
                    f"scorer {settings['scorer']}")
    plot = save_figure(figure, out_dir / "gain.png", dpi=120)
    video = None
    if report.get("video"):
        clip = report["video"]
        video = write_video(out_dir / "steered.mp4", steering_video_frames(clip["futures"], clip["best"],
                                                                             clip["real"]), fps=fps, scale=3)
    return {"plot": plot, "video": video}
