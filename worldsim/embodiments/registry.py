"""The embodiment registry: plug-ins by name, built-in ones and a user's own.

Three ways a plug-in gets in, looked up in this order:

1. :func:`register_embodiment` at run time, with a plug-in instance or a ``"module:object"`` string naming one (an
   instance, or a class or factory called with no arguments);
2. an entry point in the group ``worldsim.embodiments`` of an installed package (``[project.entry-points.
   "worldsim.embodiments"] my-arm = "my_package.worldsim_plugin:MyArm"``), loaded the first time the registry is
   asked;
3. the built-in plug-ins, each in its own package under :mod:`worldsim.embodiments` whose name is the plug-in's and
   which exports the plug-in class as ``PLUGIN`` (found by listing the packages; imported only when asked for, since
   their env packages are optional extras).

Commands that take ``--embodiment`` also accept ``module:object``, which registers it on the spot, so a user runs
``worldsim rank --embodiment my_package.plugin:MyArm`` without editing worldsim or installing an entry point.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from worldsim.utils.imports import load_object
from worldsim.embodiments.base import EmbodimentPlugin, check_plugin

ENTRY_POINT_GROUP = "worldsim.embodiments"
#: built-in plug-ins: name -> "module:PLUGIN", one per package of worldsim.embodiments
BUILTIN_EMBODIMENTS = {module.name: f"worldsim.embodiments.{module.name}:PLUGIN"
                       for module in pkgutil.iter_modules(importlib.import_module("worldsim.embodiments").__path__)
                       if module.ispkg}

_registry: dict[str, EmbodimentPlugin] = {}
_entry_points_loaded = False


def _load_object(spec: str) -> EmbodimentPlugin:
    """The plug-in a ``"module:object"`` string names (an instance, or a class / factory called with no arguments).

    Raises:
        ValueError: the string is not ``module:object``, the module has no such attribute, or the object is not a
            plug-in.
        ImportError: the module cannot be imported.
    """
    return load_object(spec, "embodiment plug-in", EmbodimentPlugin)


def register_embodiment(plugin: EmbodimentPlugin | str, replace: bool = False) -> EmbodimentPlugin:
    """Registers an embodiment plug-in under its name.

    Args:
        plugin: an :class:`EmbodimentPlugin` instance, or ``"module:object"`` naming one.
        replace: allow replacing a plug-in already registered under the same name.

    Returns:
        The registered plug-in.

    Raises:
        ValueError: a malformed plug-in (:func:`~worldsim.embodiments.base.check_plugin`), or a name already taken
            and ``replace`` not set (the registry is unchanged).
    """
    if isinstance(plugin, str):
        plugin = _load_object(plugin)
    check_plugin(plugin)
    existing = _registry.get(plugin.name)
    if existing is not None and existing is not plugin and not replace:
        raise ValueError(f"an embodiment named {plugin.name!r} is already registered ({existing!r}); pass "
                         f"replace=True to replace it")
    _registry[plugin.name] = plugin
    return plugin


def unregister_embodiment(name: str) -> None:
    """Removes a registered plug-in (built-ins come back on the next lookup). Unknown names are ignored."""
    _registry.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _registry:
            continue
        loaded = entry.load()
        plugin = loaded if isinstance(loaded, EmbodimentPlugin) else loaded()
        plugin = check_plugin(plugin)
        if plugin.name != entry.name:
            raise ValueError(f"entry point {entry.name!r} in {ENTRY_POINT_GROUP!r} gave a plug-in named "
                             f"{plugin.name!r}; the names must agree")
        _registry[plugin.name] = plugin


def registered_embodiments() -> list[str]:
    """Names of every plug-in that can be made: registered, entry points and built-ins, sorted."""
    _load_entry_points()
    return sorted(set(_registry) | set(BUILTIN_EMBODIMENTS))


def make_embodiment(name: str) -> EmbodimentPlugin:
    """The plug-in called ``name`` (or named by ``"module:object"``, which registers it).

    Raises:
        ValueError: an unknown name (the message lists the known ones), or a bad ``module:object``.
    """
    if ":" in name:
        plugin = _load_object(name)
        return _registry[plugin.name] if _registry.get(plugin.name) is plugin else register_embodiment(
            plugin, replace=True)
    if name in _registry:
        return _registry[name]
    _load_entry_points()
    if name in _registry:
        return _registry[name]
    if name in BUILTIN_EMBODIMENTS:
        return register_embodiment(_load_object(BUILTIN_EMBODIMENTS[name]))
    raise ValueError(f"unknown embodiment {name!r}; known: {', '.join(registered_embodiments())} (or a "
                     f"'module:object' naming your own EmbodimentPlugin)")


def embodiment_for_env(env_id: str) -> EmbodimentPlugin | None:
    """The plug-in that serves the Gymnasium id ``env_id``, or None."""
    for name in registered_embodiments():
        try:
            plugin = make_embodiment(name)
        except ImportError:
            continue
        if env_id in plugin.env_ids:
            return plugin
    return None


def resolve_embodiment(pipeline, embodiment: str | None = None) -> tuple[str, EmbodimentPlugin]:
    """The model's embodiment and its plug-in, for commands that take ``--embodiment``.

    Args:
        pipeline: a :class:`~worldsim.pipelines.WorldModelPipeline`.
        embodiment: the model's embodiment name, or a plug-in (name or ``module:object``) whose name is one of the
            model's; None: the model's default embodiment.

    Returns:
        ``(the model's embodiment name, the plug-in)``. The plug-in is looked up by the embodiment's name, then by
        the env id the model recorded for it.

    Raises:
        ValueError: the model has no such embodiment, or no plug-in serves it (the message lists the known ones).
    """
    if embodiment is not None and ":" in embodiment:
        plugin = make_embodiment(embodiment)
        spec = pipeline.embodiment(plugin.name)
        return spec.name, plugin
    spec = pipeline.embodiment(embodiment)
    if spec.name in registered_embodiments():
        return spec.name, make_embodiment(spec.name)
    plugin = embodiment_for_env(spec.env_id) if spec.env_id else None
    if plugin is None:
        raise ValueError(f"no embodiment plug-in for the model's embodiment {spec.name!r} (env {spec.env_id!r}); "
                         f"known: {', '.join(registered_embodiments())}; register yours with "
                         f"register_embodiment or pass --embodiment module:object")
    return spec.name, plugin
