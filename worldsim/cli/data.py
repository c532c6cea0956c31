"""``worldsim collect``: record episodes from a Gymnasium env into a LeRobot dataset."""

from __future__ import annotations


import yaml


def _key_values(items: list[str] | None, flag: str) -> dict:
    """``["noise_std=[0,5]", "wander_prob=0.1"]`` -> dict (values parsed as YAML)."""
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} expects key=value, got {item!r}")
        result[key] = yaml.safe_load(value)
    return result


def cmd_collect(args) -> None:
    from worldsim.data.collect import collect

    out = collect(args.env, args.policy, args.episodes, args.out, seed=args.seed, max_steps=args.max_steps,
                  policy_kwargs=_key_values(args.policy_kwargs, "--policy-kwargs"),
                  env_kwargs=_key_values(args.env_kwargs, "--env-kwargs"), start=args.start)
    from worldsim.data.lerobot import LeRobotDataset

    dataset = LeRobotDataset(out)
    cameras = f" (cameras: {', '.join(dataset.video_keys)})" if len(dataset.video_keys) > 1 else ""
    print(f"wrote {dataset.num_episodes} episodes, {dataset.num_frames} frames to {out}{cameras}")


def _add_collect(sub) -> None:
    p = sub.add_parser("collect", help="record episodes from a Gymnasium env into a LeRobot v3.0 dataset")
    p.add_argument("--env", required=True, help="Gymnasium id; an embodiment plug-in serving it supplies the pixel-observation settings, task text and state recording; a dict observation with observation.images.<camera> keys records every camera")
    p.add_argument("--policy", default="random", help="random | zoo:<member> (the plug-in's zoo) | a plug-in's collection policy | module:callable | a policy checkpoint folder (worldsim train-bc; keyword noise_std)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--policy-kwargs", nargs="*", metavar="KEY=VALUE",
                   help="policy arguments; a list value is cycled over episodes, e.g. noise_std=[0,5,15,30]")
    p.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="gym.make arguments")
    p.add_argument("--start", help="a start-state distribution the env's plug-in names (EmbodimentPlugin.start_distributions)")
    p.set_defaults(func=cmd_collect)


#: this group's verbs: name -> function adding its subcommand to ``worldsim``'s subparsers
PARSERS = {
    "collect": _add_collect,
}
