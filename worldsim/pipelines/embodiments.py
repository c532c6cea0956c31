"""The embodiments of a pipeline: the action sources it can be driven by, as its ``worldsim.json`` describes them."""

from __future__ import annotations

from dataclasses import dataclass

from worldsim.data.clips import ActionNormalizer
from worldsim.models.world_model import WorldModelTransformer


@dataclass
class Embodiment:
    """One action source a pipeline can be driven by.

    Attributes:
        name: e.g. ``"minigrid"``.
        index: the transformer's embodiment index, or None for a single-embodiment transformer.
        action_space: the env's action space as JSON (:mod:`worldsim.data.spaces`), or None.
        normalizer: action normalisation of the flat layout.
        env_id: the Gymnasium id the data came from.
        fps: frames per second of the data.
    """

    name: str
    index: int | None
    action_space: dict | None
    normalizer: ActionNormalizer
    env_id: str | None = None
    fps: int = 10

    @property
    def action_dim(self) -> int:
        """Flat action size A of this embodiment."""
        return int(self.normalizer.minimum.size)


def embodiments_from_metadata(metadata: dict, transformer: WorldModelTransformer) -> dict[str, Embodiment]:
    """The embodiments a pipeline's ``worldsim.json`` describes, checked against the transformer.

    A single-embodiment pipeline keeps its fields at the top level (``embodiment``, ``action_space``,
    ``action_normalizer``, ``env_id``, ``fps``); a multi-embodiment one lists them under ``embodiments`` by name.

    Raises:
        ValueError: an embodiment the transformer does not know, or an action size the transformer cannot take.
    """
    if "embodiments" not in metadata:
        name = metadata.get("embodiment") or "default"
        entries = {name: metadata}
    else:
        entries = metadata["embodiments"]
    known = transformer.embodiment_names if transformer.config.embodiments else None
    # a time-compressed model reads k grouped actions per latent frame, each of the per-step width
    group = int(metadata.get("frames_per_latent", 1))
    width = transformer.config.action_dim // group
    out = {}
    for name, entry in entries.items():
        if known is not None and name not in known:
            raise ValueError(f"worldsim.json names embodiment {name!r}, the transformer knows {known}")
        spec = Embodiment(name, None if known is None else known.index(name), entry.get("action_space"),
                          ActionNormalizer.from_dict(entry["action_normalizer"]), entry.get("env_id"),
                          int(entry.get("fps", metadata.get("fps", 10))))
        if spec.action_dim > width or (known is None and spec.action_dim != width):
            raise ValueError(f"embodiment {name!r}: action_normalizer has {spec.action_dim} dimensions but the "
                             f"transformer expects action_dim={transformer.config.action_dim}"
                             + (f" ({group} grouped actions of {width})" if group > 1 else ""))
        out[name] = spec
    return out
