"""Embodiment plug-ins: one package per environment, and the registry generic modules ask.

>>> from worldsim.embodiments import make_embodiment           # doctest: +SKIP
>>> plugin = make_embodiment("minigrid")                        # doctest: +SKIP
>>> env = plugin.make_env()                                     # doctest: +SKIP
>>> zoo = plugin.policy_zoo(seed=0)                             # doctest: +SKIP
"""

from worldsim.embodiments.base import VALUE_AGGREGATIONS, EmbodimentPlugin, check_plugin
from worldsim.embodiments.registry import (BUILTIN_EMBODIMENTS, ENTRY_POINT_GROUP, embodiment_for_env,
                                           make_embodiment, register_embodiment, registered_embodiments,
                                           resolve_embodiment, unregister_embodiment)

__all__ = ["BUILTIN_EMBODIMENTS", "ENTRY_POINT_GROUP", "EmbodimentPlugin", "VALUE_AGGREGATIONS", "check_plugin",
           "embodiment_for_env", "make_embodiment", "register_embodiment", "registered_embodiments",
           "resolve_embodiment", "unregister_embodiment"]
