#!/usr/bin/env bash
# Checks that a refactor left PushT's ranking and steering values unchanged: runs the same small `rank` (3 zoo
# policies x 3 states x 12 steps) and `steer-eval` (K = 1, 3 on 2 states, with the oracle) on the shipped model with
# the code of REV (default: 43fea8f, before the embodiment plug-ins) and with the working tree, and compares the
# per-state values byte for byte. Prints IDENTICAL or the two JSON outputs.
#   tools/same_values_across_commits.sh [REV]
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:-43fea8f}
ROOT=$(pwd)
OLD=$(mktemp -d)
trap 'git worktree remove --force "$OLD/tree" >/dev/null 2>&1 || true; rm -rf "$OLD"' EXIT
git worktree add --detach "$OLD/tree" "$REV" >/dev/null 2>&1
cat > "$OLD/check.py" <<PY
import json
from worldsim.pipelines import WorldModelPipeline
from worldsim.evaluation.rank import rank_policies
from worldsim.steering import OutcomePredictor
from worldsim.steering.evaluate import steer_evaluate
try:
    from worldsim.embodiments.pusht.zoo import pusht_zoo
except ImportError:  # before the plug-ins
    from worldsim.evaluation.pusht_zoo import pusht_zoo
pipe = WorldModelPipeline.from_pretrained("$ROOT/checkpoints/pusht")
pipe.set_decoder("light")
zoo = pusht_zoo(seed=0)
rank = rank_policies(pipe, {k: zoo[k] for k in ["pusher-close-fast", "pusher-noise60", "still"]}, num_states=3,
                     horizon=12, num_context=4, seed=5, progress=False, num_inference_steps=2,
                     timestep_spacing="trailing")
predictor = OutcomePredictor(pipe, seed=0, num_inference_steps=2, timestep_spacing="trailing")
steer = steer_evaluate(predictor, [1, 3], num_states=2, horizon=10, chunk_length=4, oracle_follow=2, progress=False)
print(json.dumps({"rank": {n: [e["real_values"], e["imagined_values"]] for n, e in rank["policies"].items()},
                  "steer": {str(k): [v["values"], v["oracle"]] for k, v in steer["results"].items()}}))
PY
(cd "$OLD" && PYTHONPATH="$OLD/tree" "$ROOT/.venv/bin/python" check.py > old.json 2>/dev/null)
(cd "$OLD" && PYTHONPATH="$ROOT" "$ROOT/.venv/bin/python" check.py > new.json 2>/dev/null)
if cmp -s "$OLD/old.json" "$OLD/new.json"; then echo IDENTICAL; else cat "$OLD/old.json" "$OLD/new.json"; exit 1; fi
