"""Policies worldsim trains itself, to have checkpoints to evaluate and rank: behaviour cloning on camera images,
``observation.state`` and the task text (:mod:`worldsim.policies.bc`, trained by ``worldsim train-bc``)."""

from worldsim.policies.bc import BCNetwork, BCPolicy, load_bc_network

__all__ = ["BCNetwork", "BCPolicy", "load_bc_network"]
