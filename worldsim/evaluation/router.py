"""Router statistics of the mixture of action experts: which experts each embodiment's actions use.

``worldsim router-stats --model M --dataset a=data/a --dataset b=data/b`` runs every action of
each dataset through its embodiment's encoder and the router (no video model pass needed) and reports the expert
load per embodiment, dead experts, and how different the embodiments' mixes are (total-variation distance).
"""

from __future__ import annotations

import numpy as np
import torch


def router_report(load: torch.Tensor, names: list[str], dead_share: float = 0.01) -> dict:
    """Expert load per embodiment from dispatch counts.

    Args:
        load: `(num_embodiments, E)` float, how many actions of each embodiment were sent to each expert.
        names: embodiment names in row order.
        dead_share: an expert is dead when its share of all dispatches, with every embodiment that has any
            dispatches weighted equally, is below this (default 1%; a uniform router gives each expert 1/E).

    Returns:
        ``{"expert_load": {name: [fraction per expert]}, "overall_load": [share per expert, embodiments weighted
        equally], "dispatches": {name: count}, "dead_experts": [expert indices below dead_share], "dead_share":
        dead_share, "total_variation": {"a|b": 0.5 * L1 distance between two embodiments' mixes}}``.
    """
    counts = load.double()
    fractions = counts / counts.sum(-1, keepdim=True).clamp_min(1.0)
    active = counts.sum(-1) > 0
    overall = fractions[active].mean(0) if bool(active.any()) else torch.zeros(counts.shape[-1], dtype=counts.dtype)
    distances = {f"{names[i]}|{names[j]}": round(float(0.5 * (fractions[i] - fractions[j]).abs().sum()), 4)
                 for i in range(len(names)) for j in range(i + 1, len(names))}
    return {"expert_load": {name: [round(float(f), 4) for f in fractions[i]] for i, name in enumerate(names)},
            "overall_load": [round(float(f), 4) for f in overall],
            "dispatches": {name: int(counts[i].sum()) for i, name in enumerate(names)},
            "dead_experts": [int(e) for e in torch.nonzero(overall < dead_share).flatten()],
            "dead_share": dead_share,
            "total_variation": distances}


@torch.no_grad()
def router_statistics(pipeline, datasets: dict[str, "object"], max_actions: int = 20_000) -> dict:
    """Routes the actions of each embodiment's dataset through the model's action experts.

    Args:
        pipeline: a multi-embodiment :class:`~worldsim.pipelines.WorldModelPipeline` with action experts.
        datasets: ``{embodiment name: LeRobotDataset}``.
        max_actions: at most this many actions per dataset (evenly spaced).

    Returns:
        :func:`router_report` over the model's embodiments (those not given have zero dispatches).

    Raises:
        ValueError: the model has no action experts, a name is not one of its embodiments, or the model groups
            several actions per latent frame (``train.temporal_compression``).
    """
    pipeline.require_per_frame("router statistics")
    transformer = pipeline.transformer
    if transformer.action_experts is None:
        raise ValueError("this model has no mixture of action experts (transformer.num_action_experts is 0)")
    names = transformer.embodiment_names
    load = torch.zeros(len(names), transformer.config.num_action_experts)
    for name, dataset in datasets.items():
        spec = pipeline.embodiment(name)
        actions = np.asarray(dataset.action, dtype=np.float32)
        if actions.shape[-1] != spec.action_dim:
            raise ValueError(f"dataset for {name!r} has {actions.shape[-1]}-dimensional actions, the model's "
                             f"{name!r} embodiment expects {spec.action_dim}")
        actions = actions[np.linspace(0, len(actions) - 1, min(max_actions, len(actions))).astype(int)]
        normalized = pipeline._normalize(spec, actions)[:, None]  # (M, 1, A)
        ids = torch.full((len(normalized),), names.index(name), dtype=torch.long)
        transformer.encode_actions(normalized.to(pipeline.device), ids.to(pipeline.device))
        _, dispatch, _ = transformer.last_routing
        load[names.index(name)] += dispatch.float().sum(0).cpu()
    return router_report(load, names)
