"""Training speed of the three block-causal attention modes (dense masked SDPA, frame-chunked SDPA, FlexAttention),
and how far their outputs differ (bf16), for worldsim's transformer or an adapted Wan backbone of a given size.

One training step is forward + backward + AdamW on random latents and actions with the package's flow-matching loss,
under bf16 autocast, as ``worldsim bench`` times training. Run it where the kernels matter (a GPU):

    python tools/attention_modes_bench.py --device cuda --arch wan --grid 30 52 --frames 8 --batch-size 4
    python tools/attention_modes_bench.py --device cuda --arch worldsim --grid 8 8 --frames 8 --batch-size 256

``--grid`` is the latent grid (h w; Wan at 480 x 832 is 60 x 104 latents, 30 x 52 tokens after its 2 x 2 patches);
``--flex-compile`` wraps FlexAttention in ``torch.compile`` (its fused kernel; eager FlexAttention is a reference).
FlexAttention has no backward pass on CPU (torch 2.13): there, time ``--modes dense frame-chunked``.
Prints one JSON line per mode: seconds per step, samples per second, and the largest difference of its output (the
untrained weights, bf16 autocast) from the first mode's.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def build(arch: str, grid: tuple[int, int], width: int, layers: int, device: str):
    from worldsim.models.backbones import WanWorldModel
    from worldsim.models.world_model import WorldModelTransformer

    heads = width // 64
    if arch == "worldsim":
        model = WorldModelTransformer(in_channels=16, sample_size=[2 * grid[0], 2 * grid[1]], patch_size=2,
                                      num_layers=layers, num_attention_heads=heads, attention_head_dim=64,
                                      action_dim=7, rope_axes_dim=(32, 16, 16))
    else:
        model = WanWorldModel(backbone_config=dict(patch_size=[1, 2, 2], num_attention_heads=heads, attention_head_dim=64,
                                                   in_channels=16, out_channels=16, text_dim=64, freq_dim=256,
                                                   ffn_dim=4 * width, num_layers=layers),
                              sample_size=[2 * grid[0], 2 * grid[1]], action_dim=7, text_sequence_length=1)
    return model.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["worldsim", "wan"], default="worldsim")
    parser.add_argument("--grid", type=int, nargs=2, default=[8, 8], help="tokens per frame side (h w)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", nargs="+", default=["dense", "frame-chunked", "flex"])
    parser.add_argument("--flex-compile", action="store_true")
    args = parser.parse_args()

    from worldsim.models.world_model import set_block_causal_attention
    from worldsim.training.config import TrainConfig
    from worldsim.training.train_world_model import flow_matching_loss

    if args.flex_compile:
        import torch.nn.attention.flex_attention as flex

        flex.flex_attention = torch.compile(flex.flex_attention)
    torch.manual_seed(0)
    model = build(args.arch, tuple(args.grid), args.width, args.layers, args.device).train()
    config = TrainConfig()
    latents = torch.randn(args.batch_size, args.frames, 16, 2 * args.grid[0], 2 * args.grid[1], device=args.device)
    action = torch.rand(args.batch_size, args.frames, 7, device=args.device) * 2 - 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    timestep = torch.full(latents.shape[:2], 500.0, device=args.device)[:2]
    probes = {}
    for mode in args.modes:  # outputs of the untrained weights first: the modes must agree before timing moves them
        set_block_causal_attention(mode)
        with torch.no_grad(), torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16):
            probes[mode] = model(latents[:2], timestep, action[:2]).float()
    reference = probes[args.modes[0]]
    for mode in args.modes:
        set_block_causal_attention(mode)
        generator = torch.Generator().manual_seed(0)

        def step():
            with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16):
                loss = flow_matching_loss(model, latents, action, config, generator)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(2):  # warm-up (and compilation)
            step()
        sync()
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        seconds = (time.perf_counter() - started) / args.steps
        print(json.dumps({"mode": mode, "arch": args.arch, "device": args.device, "grid": args.grid,
                          "tokens_per_frame": args.grid[0] * args.grid[1], "frames": args.frames,
                          "batch_size": args.batch_size, "seconds_per_step": seconds,
                          "samples_per_second": args.batch_size / seconds,
                          f"max_difference_from_{args.modes[0]}": float((probes[mode] - reference).abs().max()),
                          "flex_compiled": bool(args.flex_compile and mode == "flex")}), flush=True)

if __name__ == "__main__":
    main()
