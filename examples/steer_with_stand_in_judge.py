"""Score candidate action chunks with a judge of your own: the hook a VLM judge plugs into.

``stand_in_judge`` below is a STAND-IN, not a VLM: it finds the T block by colour and prefers futures whose block
ends closer to the goal. A real judge has the same signature: it receives the imagined futures
``(K, H, S, S, 3)`` uint8 and the task text, and returns one score per candidate (higher is better), for example
by asking a vision-language model "did the robot push the T onto the green goal?" about the last frame.

Run:  .venv/bin/python examples/steer_with_stand_in_judge.py
"""

import numpy as np

from worldsim.embodiments.pusht.perception import locate_block
from worldsim.embodiments.pusht import PushTEmbodiment
from worldsim.evaluation.rank import real_starts
from worldsim.steering import OutcomePredictor

GOAL_CENTRE = np.array([256.0, 256.0])  # PushT's goal, in workspace pixels


def stand_in_judge(frames: np.ndarray, task: str) -> np.ndarray:
    """STAND-IN for a VLM judge: minus the distance (px) from the last imagined frame's block to the goal."""
    block, _ = locate_block(frames[:, -1])  # (K, 2), NaN where the block is not found
    distance = np.linalg.norm(block - GOAL_CENTRE, axis=-1)
    return -np.nan_to_num(distance, nan=1e3)


# 4 real PushT frames (the agent holding still) as the current observation history
frames, actions = real_starts(PushTEmbodiment(), [7], num_context=4, image_size=64)
predictor = OutcomePredictor("checkpoints/pusht", scorer=stand_in_judge, task="push the T onto the green goal")

# 8 candidate chunks of 8 target positions each: straight lines from the agent toward random points
rng = np.random.default_rng(0)
start = actions[0, -1]
ends = rng.uniform(50, 462, (8, 2))
candidates = start + (ends - start)[:, None] * np.linspace(0.125, 1.0, 8)[None, :, None]

prediction = predictor.predict(frames[0], actions[0], candidates.astype(np.float32))
for index, score in enumerate(prediction.scores):
    marker = "  <- executed" if index == prediction.best else ""
    print(f"candidate {index}: judge score {score:8.1f}{marker}")
