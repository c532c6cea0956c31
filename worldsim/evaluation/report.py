"""Turning fidelity reports into things people read: a terminal / markdown table, a plot, a video grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: rows every fidelity report has: (summary key, label, format)
ROWS = (
    ("psnr", "PSNR (dB)", "{:.2f}"),
    ("ssim", "SSIM", "{:.3f}"),
)


def _rows(report: dict) -> list[tuple[str, str, str]]:
    """The headline metric first, PSNR and SSIM, then the plug-in's other frame metrics (labels from the report's
    ``metric_labels``, which :func:`~worldsim.evaluation.fidelity.fidelity_report` copies from the plug-in)."""
    labels = report.get("metric_labels", {})
    headline = report.get("headline_metric")
    rows = []
    if headline in labels:
        label, fmt = labels[headline]
        rows += [(headline, f"{label}, mean over steps", fmt), (f"{headline}_at_horizon", f"{label} at the last step",
                                                                 fmt)]
    rows += list(ROWS)
    rows += [(key, label, fmt) for key, (label, fmt) in labels.items() if key != headline]
    return rows


def markdown_table(report: dict) -> str:
    """A markdown table: one row per metric, columns model | copy-last-frame baseline."""
    summary = report["summary"]
    lines = [f"| metric (horizon {report['horizon']}, {report['num_context']} context frames, "
             f"{report['num_windows']} windows) | model | copy-last-frame |", "|---|---|---|"]
    for key, label, fmt in _rows(report):
        model, baseline = summary.get(f"{key}/model"), summary.get(f"{key}/copy_last_frame")
        if model is None:
            continue
        lines.append(f"| {label} | {fmt.format(model)} | {fmt.format(baseline)} |")
    headline = report.get("headline_metric")
    if headline and f"{headline}_ratio" in summary:
        lines.append(f"| {headline}, model / baseline | {summary[f'{headline}_ratio']:.2f} | 1.00 |")
    if "reward_error/model" in summary:
        read = {"latents": "imagined latents", "frames": "imagined frames re-encoded"}.get(report.get("reward_model_input"))
        source = f"model: head on the {read}; " if read else ""
        lines.append(f"| reward-head error vs real reward ({source}real frames: {summary['reward_error/real_frames']:.3f}; "
                     f"mean reward {summary['reward/real']:.3f}) | {summary['reward_error/model']:.3f} | "
                     f"{summary['reward_error/copy_last_frame']:.3f} |")
    return "\n".join(lines)


def plot_per_step(report: dict, path: str | Path) -> Path:
    """Plots the headline metric, PSNR, SSIM and the plug-in's other frame metrics (up to 5 panels) against the step,
    model vs baseline (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(key, label.split(" (")[0]) for key, label, _ in _rows(report)
            if key in report["per_step"] and not key.endswith("_at_horizon")][:5]
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    axes = axes[0]
    for axis, (key, label) in zip(axes, keys):
        for name, style in (("model", "-"), ("copy_last_frame", "--")):
            values = report["per_step"][key][name]
            axis.plot(np.arange(1, len(values) + 1), values, style, label=name)
        axis.set_xlabel("imagined step")
        axis.set_title(label)
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def side_by_side(real: np.ndarray | None, imagined: np.ndarray, max_rows: int = 4) -> np.ndarray:
    """Video frames `(H, rows * S, cols * S, 3)`: one row per rollout, real | imagined, separated by a white line.

    Args:
        real: `(W, H, S, S, 3)` uint8 or None (imagined only).
        imagined: `(W, H, S, S, 3)` uint8.
    """
    rows = []
    for index in range(min(max_rows, len(imagined))):
        parts = [real[index], np.full_like(imagined[index][:, :, :2], 255), imagined[index]] if real is not None \
            else [imagined[index]]
        rows.append(np.concatenate(parts, axis=2))
        rows.append(np.full_like(rows[-1][:, :2], 255))
    return np.concatenate(rows[:-1], axis=1)
