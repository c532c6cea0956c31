"""Re-runs the real side of Meta-World ranking reports for the scripted zoo members, with each start's own noise.

Until 2026-12-01 `worldsim rank` reset a policy for one real episode at a time with ``reset(1)``, so a zoo member
replayed its first env's random stream from every start: all 50 real episodes of noise-0.6 drew the same noise,
while its 50 imagined episodes (one batch, ``reset(50)``) drew 50 different streams. A noisy policy's real success
rate was then one draw, not an average (docs/results.md, "Ranking with each start's own noise"). Ranking now hands
each episode's start seed to a policy whose ``reset`` takes ``seeds`` (:func:`~worldsim.evaluation.rank.reset_policy`),
and the Meta-World zoo seeds start ``s`` with ``seed * 1000 + s``, the stream the imagined episode of start ``s``
already drew in a one-batch run (rank's default batch of 64 holds all 50 starts). So the imagined values of those
reports are what the fixed protocol imagines (up to float differences between machines), and only the real side
needs running again. That holds only for a report ranked from seed 0 (the CLI also seeds the zoo with ``--seed``)
with all its starts in one batch; the tool refuses any other.

For every report given, this runs each zoo member of the report in the real env (state only, no rendering: about
a minute per task on 2 CPU cores), keeps every other policy's entry (the BC checkpoints are deterministic: their
real episodes do not change), recomputes the agreement, its bootstrap intervals and the returns' agreement, and
writes the report under ``--out`` with the same name. Reports of one task share one real run.

    python tools/rerun_rank_real.py \
        docs/media/metaworld-rank-state-imagined-{reach,push,pick-place,drawer-open,button-press}-v3.json \
        --out outputs/rank-fixed
    .venv/bin/worldsim rank-report outputs/rank-fixed/metaworld-rank-state-imagined-*-v3.json   # pooled

A full `worldsim rank` of reach under the fixed protocol on another machine gave the same real episodes and 634 of
the 650 imagined ones (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from worldsim.embodiments import resolve_embodiment
from worldsim.embodiments.metaworld.policies import ZOO_MEMBERS, metaworld_zoo
from worldsim.embodiments.metaworld.tasks import task_of
from worldsim.evaluation.rank import _agreement as rank_agreement  # what rank_policies reports, recomputed
from worldsim.evaluation.rank import _return_agreement as return_agreement
from worldsim.evaluation.rank import model_layout, run_real, set_policy_task
from worldsim.evaluation.ranking_metrics import bootstrap_mean_interval
from worldsim.pipelines import WorldModelPipeline
from worldsim.utils.files import write_json


def real_outcomes(plugin, layout, env_id: str, members: list[str], seeds: list[int], num_context: int,
                  horizon: int, policy_seed: int = 0) -> dict:
    """Each zoo member's real episodes, each start with its own noise (:func:`~worldsim.evaluation.rank.run_real`).

    Args:
        plugin, layout: the Meta-World plug-in and the model's observation layout (the policies read the state).
        env_id: the task's env id; members: zoo member names; seeds: the start seeds; num_context, horizon: the
            report's context frames and policy steps; policy_seed: the zoo's seed.

    Returns:
        ``{member: {"values": (S,), "success": (S,) bool, "returns": (S,), "frames": ...}}``.
    """
    zoo = metaworld_zoo(task_of(env_id), seed=policy_seed)
    outcomes = {}
    for member in members:
        policy = zoo[member]
        set_policy_task(policy, plugin.task_text(env_id))
        started = time.monotonic()
        outcomes[member] = run_real(plugin, policy, seeds, num_context, horizon, layout, keep_frames=0,
                                    env_id=env_id)
        print(f"  {member:14s} real success {outcomes[member]['success'].mean():.2f} "
              f"({time.monotonic() - started:.0f} s)", flush=True)
    return outcomes


def with_real(report: dict, outcomes: dict, source: str, seed: int) -> dict:
    """``report`` with its zoo members' real fields replaced by ``outcomes`` and the agreement recomputed.

    Raises:
        ValueError: an outcome for a different number of states than the report's.
    """
    report = json.loads(json.dumps(report))  # a deep copy
    policies = report["policies"]
    for name, outcome in outcomes.items():
        entry = policies[name]
        if len(outcome["values"]) != len(entry["imagined_values"]):
            raise ValueError(f"{name}: {len(outcome['values'])} real episodes for {len(entry['imagined_values'])} "
                             f"imagined ones")
        success = outcome["success"].astype(float)
        entry["real"] = dict(zip(("mean", "low", "high"), bootstrap_mean_interval(outcome["values"])))
        entry["real_success"] = dict(zip(("mean", "low", "high"), bootstrap_mean_interval(success)))
        entry["real_values"] = np.asarray(outcome["values"], float).tolist()
        entry["real_success_values"] = success.tolist()
        entry["real_returns"] = np.asarray(outcome["returns"], float).tolist()
    report["agreement"], report["agreement_intervals"] = rank_agreement(policies, seed)
    report["return_agreement"] = return_agreement(policies)
    report["settings"]["policy_seeds"] = "per start"
    report["settings"]["real_rerun"] = {"date": time.strftime("%Y-%m-%d"), "source": source,
                                        "policies": sorted(outcomes),
                                        "why": "real episodes of the zoo re-run with each start's own noise; "
                                               "imagined values and other policies kept from the source"}
    return report


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="`worldsim rank --json` reports of Meta-World tasks")
    parser.add_argument("--out", type=Path, required=True, help="folder for the re-run reports (same file names)")
    parser.add_argument("--model", default="checkpoints/metaworld",
                        help="the model whose observation layout the policies saw (default: the shipped model)")
    args = parser.parse_args()
    reports = {path: json.loads(path.read_text()) for path in args.reports}
    for path, report in reports.items():
        if report.get("settings", {}).get("embodiment") != "metaworld" or not report["policies"]:
            raise SystemExit(f"{path}: not a Meta-World ranking report")
        if (args.out / path.name).resolve() == path.resolve():
            raise SystemExit(f"--out {args.out} would overwrite {path}; choose another folder")
        settings = report["settings"]
        if settings.get("seed") != 0 or settings["num_states"] > settings.get("batch_size", 64):
            raise SystemExit(f"{path}: ranked from seed {settings.get('seed')} with {settings['num_states']} starts; "
                             f"only a report from seed 0 with every start in one batch imagined each start's own "
                             f"stream, so only its real side can be re-run alone")
        if settings.get("policy_seeds") == "per start":
            raise SystemExit(f"{path}: already ranked with each start's own noise")
    pipeline = WorldModelPipeline.from_pretrained(args.model)
    name, plugin = resolve_embodiment(pipeline, None)
    layout = model_layout(pipeline, name)
    by_task: dict[tuple, list[Path]] = {}
    for path, report in reports.items():
        s = report["settings"]
        by_task.setdefault((s["env_id"], s["num_states"], s["num_context"], s["horizon"], s["seed"]), []).append(path)
    args.out.mkdir(parents=True, exist_ok=True)
    for (env_id, num_states, num_context, horizon, seed), paths in by_task.items():
        members = sorted({n for path in paths for n in reports[path]["policies"] if n in ZOO_MEMBERS})
        print(f"{env_id}: {len(members)} zoo members, {num_states} starts from seed {seed}", flush=True)
        outcomes = real_outcomes(plugin, layout, env_id, members, list(range(seed, seed + num_states)),
                                 num_context, horizon)
        for path in paths:
            mine = {n: outcomes[n] for n in reports[path]["policies"] if n in outcomes}
            fixed = with_real(reports[path], mine, str(path), seed)
            write_json(args.out / path.name, fixed)
            old, new = reports[path]["agreement"], fixed["agreement"]
            print(f"  {path.name}: Spearman {old['spearman']:.2f} -> {new['spearman']:.2f}, "
                  f"MMRV {old['mmrv']:.3f} -> {new['mmrv']:.3f}", flush=True)


if __name__ == "__main__":
    main()
