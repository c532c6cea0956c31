"""Objects named by ``"module:object"`` strings (the entry-point syntax), for user plug-ins given on the command line
or in a config."""

from __future__ import annotations

import importlib
from typing import Any


def load_object(spec: str, what: str, kind: type) -> Any:
    """The ``kind`` instance a ``"module:object"`` string names: an instance as it is, a class or factory called with
    no arguments.

    Args:
        spec: ``"package.module:attribute"``.
        what: what the object is, for error messages (``"embodiment plug-in"``).
        kind: the class (or runtime-checkable protocol) the object must be an instance of.

    Raises:
        ValueError: the string is not ``module:object``, the module has no such attribute, or the object (or what
            calling it gave) is not a ``kind``.
        ImportError: the module cannot be imported.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{what} {spec!r} is not 'module:object'")
    module = importlib.import_module(module_name)
    try:
        target = getattr(module, attribute)
    except AttributeError as error:
        raise ValueError(f"{what} {spec!r}: module {module_name!r} has no attribute {attribute!r}") from error
    made = target if isinstance(target, kind) else target() if callable(target) else target
    if not isinstance(made, kind):
        raise ValueError(f"{what} {spec!r} gave a {type(made).__name__}, not a {kind.__name__}")
    return made
