"""``worldsim train-bc``: fits a behaviour-cloned policy (:class:`~worldsim.policies.bc.BCNetwork`) to recorded episodes
and saves it at several training steps, so that one run leaves policies of graded skill to rank.

Every frame of a training episode gives one pair: (its camera images, its ``observation.state``, its episode's task
text) -> its recorded ``action`` (normalised, in [-1, 1]); the loss is the mean squared error. With ``success_only``
(the default) only episodes that reach ``next.success`` are used: the demonstrations, not the failures. In training
each camera's image is shifted by a few pixels at random (edge pixels repeated), the augmentation DrQ (Kostrikov et
al. 2020) uses against overfitting small image datasets. Frames are read from the decoded-frame cache
(:func:`~worldsim.data.frame_cache.load_frame_cache`, the cameras side by side), built next to each dataset the first
time.

The report (``<output>/report.json``) gives for each checkpoint the training loss and, on the held-out datasets
(``val_datasets``; with the same episode filter), the action MSE against that of the baseline that always plays the
mean training action.

    worldsim train-bc --dataset data/metaworld-push-v3 --val-dataset data/metaworld-push-v3-heldout --output runs/bc
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm.auto import tqdm

from worldsim.constants import OBS_STATE, SUCCESS
from worldsim.data.frame_cache import load_frame_cache
from worldsim.data.lerobot import LeRobotDataset
from worldsim.models.state import MIN_STATE_STD
from worldsim.policies.bc import BCNetwork, save_bc_network
from worldsim.training.config import BCConfig, config_with
from worldsim.utils.files import write_json

#: frames per forward pass when scoring held-out data
EVAL_BATCH_SIZE = 256


@dataclass
class BCRows:
    """The frames of one dataset that BC trains on or scores.

    Attributes:
        root: the dataset folder.
        rows: `(M,)` int64, the dataset rows used (frames of the selected episodes).
        state: `(M, S)` float32, their ``observation.state`` (env units).
        action: `(M, A)` float32, their actions (normalised, [-1, 1]).
        task: M task texts, each row's episode's.
        num_episodes: the episodes selected.
        frames: `(N, H, V * w, 3)` uint8 memory map of every dataset frame, the cameras side by side (None until
            :func:`load_frames`).
    """

    root: Path
    rows: np.ndarray
    state: np.ndarray
    action: np.ndarray
    task: list[str]
    num_episodes: int
    frames: np.ndarray | None = None


def select_rows(dataset: LeRobotDataset, camera_keys: list[str], success_only: bool) -> BCRows:
    """Checks that ``dataset`` has what BC reads and picks its training frames (no video is decoded).

    Args:
        dataset: the dataset.
        camera_keys: the cameras the policy reads.
        success_only: keep only the episodes with a ``next.success`` frame.

    Returns:
        The selected rows (:class:`BCRows`, ``frames`` None).

    Raises:
        ValueError: the dataset has no ``observation.state`` column, lacks one of ``camera_keys``, has an episode
            without a task text, has a state that is not finite, has no ``next.success`` column (with
            ``success_only``), or has no episode left to use; the message names the dataset and what is missing.
    """
    root = dataset.root
    if OBS_STATE not in dataset.columns:
        raise ValueError(f"{root}: no {OBS_STATE!r} column; a BC policy reads the robot state")
    missing = [key for key in camera_keys if key not in dataset.video_keys]
    if missing:
        raise ValueError(f"{root} has no camera {missing[0]!r}; its cameras: {dataset.video_keys}")
    tasks = dataset.episode_tasks
    untold = [episode for episode, task in enumerate(tasks) if not task]
    if untold:
        raise ValueError(f"{root}: episode {untold[0]} has no task text; a BC policy is conditioned on the task "
                         f"(record with a task, or use datasets whose episodes all name one)")
    episodes = np.arange(dataset.num_episodes)
    if success_only:
        if SUCCESS not in dataset.columns:
            raise ValueError(f"{root}: no {SUCCESS!r} column to pick the successful episodes; train with "
                             f"success_only=false")
        success = np.asarray(dataset.columns[SUCCESS], dtype=bool)
        episodes = np.array([e for e in episodes if success[dataset.episode_slice(e)].any()], dtype=np.int64)
        if not len(episodes):
            raise ValueError(f"{root}: none of its {dataset.num_episodes} episodes reaches {SUCCESS}; nothing to "
                             f"imitate (train with success_only=false to use them all)")
    rows = np.flatnonzero(np.isin(dataset.episode_index, episodes))
    state = np.asarray(dataset.columns[OBS_STATE], dtype=np.float32)[rows].reshape(len(rows), -1)
    bad = np.flatnonzero(~np.isfinite(state).all(axis=1))
    if len(bad):
        raise ValueError(f"{root}: {OBS_STATE} of frame {int(rows[bad[0]])} is not finite")
    return BCRows(root=Path(root), rows=rows, state=state, action=np.asarray(dataset.action[rows], np.float32),
                  task=[tasks[e] for e in dataset.episode_index[rows]], num_episodes=len(episodes))


def load_frames(dataset: LeRobotDataset, data: BCRows, camera_keys: list[str], image_size: tuple[int, int],
                progress: bool = True) -> None:
    """Sets ``data.frames``: every frame of ``dataset`` with ``camera_keys`` side by side, each camera at
    ``image_size`` = ``(H, w)`` pixels, from the decoded-frame cache under ``<dataset>/cache`` (built if missing)."""
    height, width = image_size
    data.frames = load_frame_cache(dataset, (height, width * len(camera_keys)), progress=progress,
                                   video_keys=camera_keys)


def batch_images(data: BCRows, index: np.ndarray, num_cameras: int) -> torch.Tensor:
    """The images of some of ``data``'s rows.

    Args:
        data: rows with ``frames`` loaded.
        index: `(B,)` int, positions into ``data.rows``.
        num_cameras: V, the cameras side by side in each frame.

    Returns:
        `(B, V, 3, H, w)` float32 in [0, 1].
    """
    order = np.argsort(index, kind="stable")  # a memory map reads sorted rows faster
    frames = np.empty((len(index), *data.frames.shape[1:]), np.uint8)
    frames[order] = data.frames[data.rows[np.asarray(index)[order]]]
    batch, height, width = frames.shape[:3]
    views = torch.from_numpy(frames).reshape(batch, height, num_cameras, width // num_cameras, 3)
    return views.permute(0, 2, 4, 1, 3).float() / 255.0  # (B, V, 3, H, w): view v is columns [v w, (v + 1) w)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to ``max_shift`` pixels in each direction at random, the edge pixels repeated (DrQ's
    augmentation, Kostrikov et al. 2020).

    Args:
        images: `(..., 3, H, w)` float.
        max_shift: the largest shift in pixels (0: the images unchanged).
        generator: draws the shifts (CPU).

    Returns:
        `(..., 3, H, w)` float, same dtype and device.
    """
    if max_shift == 0:
        return images
    shape = images.shape
    flat = images.reshape(-1, *shape[-3:])  # (B', 3, H, w)
    count, channels, height, width = flat.shape
    padded = F.pad(flat, (max_shift,) * 4, mode="replicate")  # (B', 3, H + 2s, w + 2s)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (count,), generator=generator).to(images.device)
              for _ in range(2))
    rows = (torch.arange(height, device=images.device)[None] + dy[:, None])  # (B', H)
    cols = (torch.arange(width, device=images.device)[None] + dx[:, None])  # (B', w)
    padded = padded.gather(2, rows[:, None, :, None].expand(count, channels, height, padded.shape[-1]))
    shifted = padded.gather(3, cols[:, None, None, :].expand(count, channels, height, width))
    return shifted.reshape(shape)


@torch.no_grad()
def predict_actions(network: BCNetwork, data: list[BCRows], picks: list[np.ndarray], tasks: list[str],
                    device: torch.device) -> np.ndarray:
    """The network's actions on chosen rows of several datasets (no augmentation).

    Args:
        network: the network (its mode is restored afterwards).
        data: the datasets' rows, frames loaded.
        picks: per dataset, `(M_d,)` int positions into its ``rows``.
        tasks: the network's task table.
        device: where the network is.

    Returns:
        `(sum M_d, A)` float32, the datasets' rows in order.
    """
    training = network.training
    network.eval()
    out = []
    for part, index in zip(data, picks):
        for start in range(0, len(index), EVAL_BATCH_SIZE):
            chunk = index[start:start + EVAL_BATCH_SIZE]
            task = torch.tensor([tasks.index(part.task[i]) for i in chunk], dtype=torch.long, device=device)
            images = batch_images(part, chunk, len(network.config.camera_keys)).to(device)
            out.append(network(images, torch.from_numpy(part.state[chunk]).to(device), task).cpu().numpy())
    network.train(training)
    return np.concatenate(out) if out else np.empty((0, network.config.action_dim), np.float32)


def _evenly(count: int, limit: int | None) -> np.ndarray:
    """At most ``limit`` of ``range(count)``, evenly spaced (all of them for None)."""
    if limit is None or count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


def train_bc(datasets: list[str | Path], output: str | Path, config: BCConfig | None = None,
             val_datasets: list[str | Path] | None = None, progress: bool = True, **overrides) -> dict:
    """Trains a BC policy on recorded episodes and writes a checkpoint at each of ``config.save_steps``.

    Args:
        datasets: LeRobot dataset folders with ``observation.state``, the cameras and a task text per episode (all
            of one state and action width).
        output: a new (or empty) folder; gets ``step-<step:06d>/`` per checkpoint (``config.json`` +
            ``model.safetensors`` + ``metrics.json``, loadable by
            :meth:`BCPolicy.from_pretrained <worldsim.policies.bc.BCPolicy.from_pretrained>`) and ``report.json``.
        config: the settings (:class:`~worldsim.training.config.BCConfig`); None: the defaults.
        val_datasets: datasets scored at each checkpoint (none of their frames is trained on); their tasks must be
            among the training ones. None: no held-out score.
        progress: show progress bars.
        **overrides: :class:`BCConfig` fields replacing ``config``'s (``steps=100, save_steps=[50, 100]``).

    Returns:
        The report, also written to ``output/report.json`` after each checkpoint: ``checkpoints`` (one entry per
        save step: ``step``, ``folder``, ``train_loss`` (mean over the steps since the previous checkpoint, on
        augmented images), ``val_action_mse`` and ``val_action_mse_per_dim`` (None without ``val_datasets``), and
        ``val_mean_action_mse``, the baseline that always plays the mean training action), ``final`` (the last
        checkpoint's folder), ``tasks``, ``camera_keys``, frame and episode counts, ``num_parameters``,
        ``mean_action``, ``train_mean_action_mse``, ``seconds_per_100_steps`` (training only, without the scoring)
        and the resolved ``config``. MSEs are in normalised action units squared, averaged over action dimensions.

    Raises:
        TypeError: an override that is not a :class:`BCConfig` field.
        ValueError: an impossible setting (naming the field), no datasets, a dataset lacking the state, a camera, a
            task text or a successful episode (:func:`select_rows`), datasets of different state or action widths, or
            a held-out task the training data lacks. All are checked before any video is decoded.
        FileExistsError: ``output`` exists and is not empty.
    """
    config = config_with(BCConfig, config, overrides, "train_bc")
    if not datasets:
        raise ValueError("give at least one training dataset")
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} exists and is not empty; give a new folder for the checkpoints")
    image_size = (config.image_size, config.image_width or config.image_size)

    # 1. open and check every dataset before decoding any video
    opened = [LeRobotDataset(root) for root in [*datasets, *(val_datasets or [])]]
    camera_keys = list(config.camera_keys or opened[0].video_keys)
    selected = [select_rows(dataset, camera_keys, config.success_only) for dataset in opened]
    for dataset, data in zip(opened[1:], selected[1:]):
        for name, width, first in ((OBS_STATE, data.state.shape[1], selected[0].state.shape[1]),
                                   ("action", data.action.shape[1], selected[0].action.shape[1])):
            if width != first:
                raise ValueError(f"{dataset.root}: {name} has {width} dimensions, {opened[0].root} has {first}; one "
                                 f"policy serves one layout")
    train, held = selected[:len(datasets)], selected[len(datasets):]
    tasks = list(dict.fromkeys(task for data in train for task in data.task))  # first-seen order
    for data in held:
        unknown = sorted(set(data.task) - set(tasks))
        if unknown:
            raise ValueError(f"{data.root}: held-out task {unknown[0]!r} is not among the training tasks {tasks}")

    # 2. the frames, from each dataset's cache (decoded the first time)
    for dataset, data in zip(opened, selected):
        load_frames(dataset, data, camera_keys, image_size, progress)

    # 3. the network, normalised by the training states
    states = np.concatenate([data.state for data in train]).astype(np.float64)
    actions = np.concatenate([data.action for data in train]).astype(np.float64)
    torch.manual_seed(config.seed)
    network = BCNetwork(camera_keys=camera_keys, image_size=list(image_size), state_dim=states.shape[1],
                        state_mean=states.mean(0).tolist(), state_std=np.maximum(states.std(0), MIN_STATE_STD).tolist(),
                        action_dim=actions.shape[1], tasks=tasks, channels=list(config.channels),
                        hidden_dim=config.hidden_dim)
    mean_action = actions.mean(0)
    held_picks = [np.array([], np.int64)] * len(held)
    if held:
        scored = _evenly(sum(len(data.rows) for data in held), config.val_frames)
        bounds = np.cumsum([0] + [len(data.rows) for data in held])
        held_picks = [scored[(scored >= lo) & (scored < hi)] - lo for lo, hi in zip(bounds[:-1], bounds[1:])]
    held_actions = (np.concatenate([data.action[pick] for data, pick in zip(held, held_picks)]).astype(np.float64)
                    if held else np.empty((0, actions.shape[1])))
    report = {
        "date": time.strftime("%Y-%m-%d"), "datasets": [str(d) for d in datasets],
        "val_datasets": [str(d) for d in val_datasets or []], "tasks": tasks, "camera_keys": camera_keys,
        "image_size": list(image_size), "train_frames": len(actions),
        "train_episodes": sum(data.num_episodes for data in train),
        "val_frames": len(held_actions), "val_episodes": sum(data.num_episodes for data in held),
        "num_parameters": sum(p.numel() for p in network.parameters()), "mean_action": mean_action.tolist(),
        "train_mean_action_mse": float(((actions - mean_action) ** 2).mean()),
        "checkpoints": [], "final": None, "seconds_per_100_steps": None, "config": asdict(config),
    }

    # 4. AdamW with cosine decay, batches drawn uniformly over every training frame
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    network, optimizer, scheduler = accelerator.prepare(network, optimizer, scheduler)
    device = accelerator.device
    rng, generator = np.random.default_rng(config.seed), torch.Generator().manual_seed(config.seed)
    sizes = np.array([len(data.rows) for data in train])
    tasks_of = [torch.tensor([tasks.index(task) for task in data.task], dtype=torch.long) for data in train]
    save_steps, losses, training_seconds = sorted(set(config.save_steps) | {config.steps}), [], 0.0
    network.train()
    bar = tqdm(range(1, config.steps + 1), desc="train BC policy", disable=not progress)
    for step in bar:
        started = time.monotonic()
        counts = rng.multinomial(config.batch_size, sizes / sizes.sum())
        images, state, action, task = [], [], [], []
        for data, task_index, count in zip(train, tasks_of, counts):
            if count:
                index = rng.integers(0, len(data.rows), count)
                images.append(batch_images(data, index, len(camera_keys)))
                state.append(torch.from_numpy(data.state[index]))
                action.append(torch.from_numpy(data.action[index]))
                task.append(task_index[index])
        images = random_shift(torch.cat(images), config.shift_pixels, generator)
        state, action, task = (torch.cat(part).to(device) for part in (state, action, task))
        with accelerator.autocast():
            predicted = network(images.to(device), state, task)
        loss = F.mse_loss(predicted.float(), action)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        training_seconds += time.monotonic() - started
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step not in save_steps:
            continue

        # 5. a checkpoint: score the held-out frames, write the folder, then the report so far
        model = accelerator.unwrap_model(network, keep_fp32_wrapper=False)  # scored and saved in float32, as it acts
        entry = {"step": step, "folder": str(output / f"step-{step:06d}"), "train_loss": float(np.mean(losses)),
                 "val_action_mse": None, "val_action_mse_per_dim": None, "val_mean_action_mse": None}
        if held:
            error = (predict_actions(model, held, held_picks, tasks, device).astype(np.float64) - held_actions) ** 2
            entry.update(val_action_mse=float(error.mean()), val_action_mse_per_dim=error.mean(0).tolist(),
                         val_mean_action_mse=float(((held_actions - mean_action) ** 2).mean()))
        losses = []
        save_bc_network(model, entry["folder"], metrics={**entry, "tasks": tasks})
        report["checkpoints"].append(entry)
        report.update(final=entry["folder"], seconds_per_100_steps=100 * training_seconds / step)
        write_json(output / "report.json", report)
    return report
