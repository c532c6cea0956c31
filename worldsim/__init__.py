"""worldsim: a learned simulator.

An action-conditioned autoregressive video diffusion model trained on action-annotated video, served as a
Gymnasium environment (``worldsim/WorldModel-v0``).
"""

__version__ = "0.1.0"
