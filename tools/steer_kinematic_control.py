"""Control for Meta-World steering by the predicted state: the same best-of-K loop and the same progress measure, with
the world model replaced by dead reckoning. Each candidate chunk moves the last real hand position by the summed
actions times Meta-World's hand step (``action_scale``, 1 cm per unit action per step) and leaves every object
where it was; the chunk is scored by the plug-in's ``state_progress`` of that state, as ``steer-eval --value-key
state_progress`` scores the imagined one. What steering by imagination gains beyond this rule is what the model adds
(docs/results.md, "Steering by the predicted state").

    python tools/steer_kinematic_control.py --env-id reach-v3 --base-noise 2.0 --out outputs/steer-kinematic-reach

The model folder is loaded only for its observation layout (cameras, state size, task); it imagines nothing. The
dead reckoning ignores the hand's workspace limits, imagination samples and follow-up steps: it is a control, not a
predictor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from worldsim.embodiments.metaworld import MetaWorldEmbodiment, dead_reckon, env_id as task_env_id, task_of
from worldsim.evaluation.rank import state_rule_for
from worldsim.pipelines import WorldModelPipeline
from worldsim.steering import OutcomePredictor
from worldsim.steering.predictor import Prediction
from worldsim.steering.evaluate import steer_evaluate, steer_table
from worldsim.utils.files import write_json


class DeadReckoningPredictor(OutcomePredictor):
    """An :class:`OutcomePredictor` whose futures are dead reckoning of the hand
    (:func:`~worldsim.embodiments.metaworld.dead_reckon`), not imagination (see the module docstring), scored by the
    plug-in's ``state_progress``. ``predict`` needs the context's states; its frames are blank."""

    def __init__(self, model, env_id: str, **kwargs):
        pipeline = WorldModelPipeline.from_pretrained(model)
        super().__init__(pipeline, value_key="state_progress", **kwargs, state_value=state_rule_for(
            pipeline, MetaWorldEmbodiment(), None, env_id, "state_progress"))

    def predict(self, frames, actions, candidates, states=None) -> Prediction:
        if states is None:
            raise ValueError("dead reckoning starts from the last real state: pass the context's states")
        count, horizon = np.shape(candidates)[:2]
        ends = dead_reckon(np.asarray(states)[-1], candidates)
        scores = np.asarray(self.state_value(ends), dtype=np.float64)
        blank = np.zeros((count, horizon, 1, 1, 3), np.uint8)  # nothing is imagined
        self.last_prediction = Prediction(blank, np.full((count, horizon), np.nan, np.float32), scores,
                                          int(np.argmax(scores)), horizon, np.zeros(count),
                                          states=np.repeat(ends[:, None], horizon, axis=1))
        return self.last_prediction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="checkpoints/metaworld")
    parser.add_argument("--env-id", default="reach-v3")
    parser.add_argument("--base-noise", type=float, default=2.0)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--num-states", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", default="outputs/steer-kinematic")
    parser.add_argument("--oracle", action="store_true",
                        help="also execute every candidate in the real env and report how well dead reckoning ranks "
                             "them by the real states' progress (steer-eval --oracle-follow)")
    args = parser.parse_args()
    env_id = task_env_id(task_of(args.env_id))
    predictor = DeadReckoningPredictor(args.model, env_id, seed=args.seed)
    report = steer_evaluate(predictor, [args.candidates], num_states=args.num_states, horizon=100, num_context=4,
                            seed=args.seed, base_noise=args.base_noise, chunk_length=5,
                            oracle_follow=1 if args.oracle else 0,
                            embodiment_plugin=MetaWorldEmbodiment(), env_id=env_id)
    print(steer_table(report))
    report["settings"]["scorer"] = "dead reckoning of the hand (last state_progress)"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", {"settings": report["settings"], "results": report["results"],
                                     "model": "none (dead reckoning)"})
    print(f"wrote {out / 'report.json'}")


if __name__ == "__main__":
    main()
