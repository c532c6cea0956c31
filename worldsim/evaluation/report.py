"""Turning reports into things people read, and the shape ``worldsim rank`` and ``steer-eval`` share.

Fidelity (``worldsim evaluate``): a markdown table (:func:`markdown_table`), a per-step plot (:func:`plot_per_step`)
and a real | imagined video grid (:func:`side_by_side`).

Run reports (``worldsim rank`` in :mod:`worldsim.evaluation.rank`, ``worldsim steer-eval`` in
:mod:`worldsim.steering.evaluate`): a JSON-able dict with ``settings``, run on a range of initial states. Both follow
one shape, run -> merge -> table -> HTML, built from the parts here:

1. merge: :func:`check_mergeable` (the runs' settings agree but for the run keys), :func:`check_new_states` (a run's
   initial states do not overlap the ones merged so far) and :func:`check_contiguous` (no gap), then
   :func:`mean_interval` to recompute the intervals on the pooled states;
2. table: :func:`format_interval` (``mean [low, high]``) and :func:`markdown_lines`;
3. page: :func:`pyplot` / :func:`save_figure` for the plot, :func:`write_row_videos` for a video per table row, and
   :func:`write_html_page` tying them up.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
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
    plt = pyplot()
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
    return save_figure(figure, path, dpi=100)


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


def pyplot():
    """matplotlib's ``pyplot`` on the Agg backend (files only, no display needed).

    Returns:
        The ``matplotlib.pyplot`` module.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path, dpi: int = 100) -> Path:
    """Lays out ``figure`` (``tight_layout``), writes it to ``path`` (its folder made when missing) and closes it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)
    return path


def check_mergeable(reports: Sequence[dict], run_keys: Iterable[str], compared_if_present: Iterable[str] = (),
                    defaults: dict | None = None) -> None:
    """Checks that run reports (``{"settings": {...}, ...}``) are of one protocol and can be merged.

    Every setting of every report must equal report 0's, except the run keys (what may differ between runs of one
    protocol on other initial states: seed, state count, date, ...). A key in ``compared_if_present`` is compared only
    when both reports have it (a setting added later, with no value that fits every earlier report); a missing key
    of ``defaults`` reads as its default (a setting added later: what reports written before it used); any other
    missing key reads as None.

    Args:
        reports: the reports, report 0 the reference.
        run_keys: settings that may differ.
        compared_if_present: settings compared only when both reports have them.
        defaults: ``{key: value}`` read for a report without the setting.

    Raises:
        ValueError: fewer than two reports; a setting that differs (the message names the report, the key and both
            values, and the keys that may differ).
    """
    if len(reports) < 2:
        raise ValueError(f"merging needs at least two reports, got {len(reports)}")
    run_keys, compared_if_present, defaults = tuple(run_keys), set(compared_if_present), defaults or {}
    first = reports[0]["settings"]
    for index, report in enumerate(reports):
        settings = report["settings"]
        for key in sorted((set(first) | set(settings)) - set(run_keys)):
            if key in compared_if_present and (key not in first or key not in settings):
                continue
            ours, theirs = settings.get(key, defaults.get(key)), first.get(key, defaults.get(key))
            if ours != theirs:
                raise ValueError(f"report {index} has {key}={ours!r}, report 0 {theirs!r}; only "
                                 f"{', '.join(run_keys)} may differ")


def check_new_states(covered, start: int, stop: int, index: int, repeat_ok: bool = False) -> bool:
    """Checks that report ``index``'s initial states ``start .. stop - 1`` can join the states merged so far.

    Args:
        covered: the states merged so far (a set, or a dict keyed by state).
        start, stop: the report's states, ``stop`` excluded.
        index: the report's position, for the message.
        repeat_ok: a report whose states are all merged already is a repeat (counted once by the caller) rather
            than an overlap.

    Returns:
        True when the states are all covered already (a repeat; only with ``repeat_ok``), False when none is.

    Raises:
        ValueError: the states overlap the covered ones (in part; or at all, without ``repeat_ok``); the message
            names the report's states and the shared ones.
    """
    shared = [state for state in range(start, stop) if state in covered]
    if not shared:
        return False
    if repeat_ok and len(shared) == stop - start:
        return True
    raise ValueError(f"report {index} (states {start}-{stop - 1}) overlaps an earlier report "
                     f"{'in part, ' if repeat_ok else ''}on states {shared[0]}-{shared[-1]}: merge runs of "
                     f"{'the same or of ' if repeat_ok else ''}disjoint states")


def check_contiguous(states: Sequence[int]) -> None:
    """Checks that merged initial states (sorted, non-empty) leave no gap.

    Raises:
        ValueError: states between the first and the last are missing (the message lists up to five).
    """
    missing = sorted(set(range(states[0], states[-1] + 1)) - set(states))
    if missing:
        raise ValueError(f"the merged states {states[0]}-{states[-1]} miss states {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}: run them too")


def mean_interval(samples) -> dict:
    """``{"mean", "low", "high"}``: the mean of per-state values `(S,)` and its bootstrap 95% interval
    (:func:`~worldsim.evaluation.ranking_metrics.bootstrap_mean_interval`)."""
    from worldsim.evaluation.ranking_metrics import bootstrap_mean_interval  # scipy: only for run reports

    return dict(zip(("mean", "low", "high"), bootstrap_mean_interval(samples)))


def format_interval(entry: dict, spec: str = ".3f") -> str:
    """``"mean [low, high]"`` of an interval entry, each number formatted with ``spec`` (``".2f"``, ``"+.3f"``);
    ``"mean"`` alone when the entry has no ``low``."""
    text = format(entry["mean"], spec)
    if "low" in entry:
        text += f" [{format(entry['low'], spec)}, {format(entry['high'], spec)}]"
    return text


def markdown_lines(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table: a header of ``columns``, its rule, one line per row of cells."""
    line = lambda cells: "| " + " | ".join(cells) + " |"
    return [line(columns), "|" + "---|" * len(columns)] + [line(cells) for cells in rows]


def write_row_videos(folder: str | Path, videos: dict[str, np.ndarray], fps: int = 10, scale: int | None = None) \
        -> list[Path]:
    """Writes one ``<folder>/<name>.mp4`` per table row (the folder is made even when ``videos`` is empty).

    Args:
        videos: ``{row name: (T, H, W, 3) uint8 frames}``.
        fps, scale: as :func:`~worldsim.utils.video.write_video` takes them.

    Returns:
        The written paths, in the order of ``videos``.
    """
    from worldsim.utils.video import write_video

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_video(folder / f"{name}.mp4", frames, fps=fps, scale=scale) for name, frames in videos.items()]


def write_html_page(path: str | Path, title: str, heading: str, settings: dict, columns: Sequence[str],
                    rows: Iterable[tuple[Sequence[str], str | None]], summary: str | None = None,
                    image: str | None = None, video_width: int = 256) -> Path:
    """Writes a report page: a heading, the settings line, a summary paragraph, an image and a table whose rows end
    in a video cell.

    Args:
        path: the ``.html`` file.
        title, heading: the page's title and ``<h1>``.
        settings: shown as one ``key=value, ...`` line.
        columns: the table's header cells, the video column's included.
        rows: ``(cells, video)`` per row: text cells (escaped here) and the video's path relative to the page (None:
            an empty cell).
        summary: a paragraph above the table (None: none).
        image: path of an image relative to the page, shown above the table (None: none).
        video_width: the videos' width in pixels.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    video_cell = lambda src: ("<td></td>" if src is None
                              else f"<td><video src='{html.escape(src)}' controls width='{video_width}'></video></td>")
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + video_cell(video) + "</tr>"
                     for cells, video in rows)
    header = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    settings_line = html.escape(", ".join(f"{key}={value}" for key, value in settings.items()))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(heading)}</h1><p>{settings_line}</p>"
            + (f"<p>{html.escape(summary)}</p>" if summary else "")
            + (f"<img src='{html.escape(image)}'>" if image else "")
            + f"<table border='1' cellpadding='4'><tr>{header}</tr>{body}</table></body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
