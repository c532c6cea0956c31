"""What happens to Meta-World's small objects (goal markers, the puck) in a model's latent space and in its imagined
frames: one row per task, the real frame (both cameras), its autoencoder reconstruction, and then the real and the
imagined frame a few steps later under the expert's real actions (4 real context frames, 3 trailing Euler steps, the
steering and ranking sampler).

    python tools/metaworld_small_objects.py --out docs/media/metaworld-small-objects.png

The image is scaled up 2x (nearest neighbour); the first two columns are the start, the last two the later step.
"""

from __future__ import annotations

import argparse

import imageio.v3 as iio
import numpy as np
import torch

from worldsim.embodiments.metaworld import MetaWorldEmbodiment, env_id as task_env_id, task_of
from worldsim.envs import WorldModelVectorEnv
from worldsim.evaluation.rank import _play_context, model_layout
from worldsim.models.autoencoders import decode_latents, encode_frames
from worldsim.pipelines import WorldModelPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="checkpoints/metaworld")
    parser.add_argument("--tasks", nargs="+", default=["reach-v3", "push-v3", "pick-place-v3"])
    parser.add_argument("--steps", type=int, default=10, help="imagined steps to the last two columns")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", default="outputs/metaworld-small-objects.png")
    args = parser.parse_args()
    if args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    pipeline = WorldModelPipeline.from_pretrained(args.model)
    layout = model_layout(pipeline, None)
    plugin = MetaWorldEmbodiment()
    sampler = pipeline.sampler_settings(num_inference_steps=3, timestep_spacing="trailing")
    rows = []
    for task in args.tasks:
        env_id = task_env_id(task_of(task))
        env = plugin.make_env(env_id)
        try:
            observation, frames, actions, states = _play_context(plugin, env, args.seed, 4, layout)
            expert = plugin.task_zoo(env_id)["expert"]
            expert.reset(1)
            chunk = []
            for _ in range(args.steps):
                seen = layout.from_real(observation, env)[0]
                action = np.asarray(expert.act({key: np.asarray(value)[None] for key, value in seen.items()})[0],
                                    np.float32)
                observation, *_ = env.step(action)
                chunk.append(action)
            real_later = layout.from_real(observation, env)[1]
        finally:
            env.close()
        reconstruction = decode_latents(pipeline.autoencoder,
                                        encode_frames(pipeline.autoencoder, torch.from_numpy(frames[-1:])))[0].numpy()
        envs = WorldModelVectorEnv(pipeline, num_envs=1, sampler=sampler, task=plugin.task_text(env_id),
                                   render_mode="rgb_array")
        envs.reset(seed=0, options={"context": {"observation.image": frames[None], "action": actions[None],
                                                "observation.state": states[None]}})
        for action in chunk:
            envs.step(action[None])
        imagined = envs.render()[0]
        envs.close()
        gap = np.full((frames.shape[1], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([frames[-1], gap, reconstruction, gap, real_later, gap, imagined], axis=1))
        print(f"{task}: done")
    image = np.concatenate(rows, axis=0).repeat(2, axis=0).repeat(2, axis=1)
    iio.imwrite(args.out, image)
    print(f"wrote {args.out}: real | autoencoder reconstruction | real after {args.steps} steps | imagined")


if __name__ == "__main__":
    main()
