"""Experiment tracking (`--report-to`): one tracker run for a whole `sera train` run.

Each SeRA iteration trains with a fresh TRL trainer whose `global_step` restarts at 0, and whose own
`report_to` stays empty (:func:`sera.training.dpo_config`): were each trainer to open its own tracker run,
a 3-iteration run would be 3 unrelated runs whose steps overlap. Instead the run opens one tracker run
(:func:`start`), and

* every trainer gets a callback (:meth:`RunTracker.callbacks`) that forwards its per-step logs (`on_log`)
  as `train/<key>` at the run-wide step = optimiser steps of the earlier iterations + the trainer's step;
* at the end of each iteration, SeRA's record of it (`summary.json`'s entry: pool, kept, generated,
  margins, held-out diagnostics, seconds per stage, ...) goes out as `sera/<key>` at the run-wide step
  where that iteration's training ended, with the warnings so far (`sera/warnings`, and their text) and,
  for an iteration that selected, the histogram of the pool's implicit reward margins (IRM), as an image
  where the tracker takes images (all four do) and as a native histogram where it has one;
* the SFT model's held-out review is logged at step 0, and the run's last values at its end.

Trackers: `tensorboard`, `wandb`, `trackio`, `mlflow`; `all` = every one of them that is installed (transformers'
meaning of `report_to=all`, restricted to these four); `none` (default); or a comma-separated list. A tracker
that is asked for by name and not installed is a :class:`SeraInputError` before any work
(:func:`check_trackers`). Where the output goes, unless the user's environment says otherwise:

    tensorboard   OUT/runs/             TENSORBOARD_LOGGING_DIR (as for transformers)
    wandb         OUT/wandb/            WANDB_DIR; WANDB_MODE=offline for no network; WANDB_PROJECT (default sera)
    trackio       OUT/trackio/          TRACKIO_DIR; TRACKIO_PROJECT (default sera)
    mlflow        OUT/mlflow/mlflow.db  MLFLOW_TRACKING_URI; MLFLOW_EXPERIMENT_NAME (default sera);
                  (artifacts in OUT/mlflow/artifacts/)

The run name is OUT's folder name (WANDB_NAME / MLFLOW_RUN_NAME override it). Only the main process logs
(:func:`sera.distributed.is_main`). `sera sft` trains with one trainer, so there transformers' own
integrations do the logging (:func:`sft_args`, :func:`sft_environment`), to the same places (staged beside
OUT until the model is saved, :func:`sft_collect`). See docs/tracking.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from sera import distributed
from sera.errors import SeraInputError, SeraRuntimeError

TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow")
"""The trackers `--report-to` accepts by name (besides `none` and `all`)."""

_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",),
            "mlflow": ("mlflow",)}
"""Importable modules that make each tracker available (any one of them)."""

PROJECT = "sera"
"""Default project (wandb, trackio) or experiment (mlflow) name."""


# -- the option ---------------------------------------------------------------------------------

def parse_report_to(report_to: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The names in a `--report-to` value (`none`, `all`, a name, comma-separated names or a list), checked
    against the known ones; `all` is kept as it is (see :func:`check_trackers`)."""
    if report_to is None:
        return []
    items = report_to.split(",") if isinstance(report_to, str) else list(report_to)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    unknown = [n for n in names if n not in (*TRACKERS, "none", "all")]
    if unknown:
        raise SeraInputError(f"--report-to: {unknown[0]!r} is not one of none, all, {', '.join(TRACKERS)} "
                             "(or a comma-separated list of them)")
    if ("none" in names or "all" in names) and len(set(names)) > 1:
        raise SeraInputError(f"--report-to: {'none' if 'none' in names else 'all'!r} cannot be combined with "
                             "other trackers")
    return [] if names in ([], ["none"]) else list(dict.fromkeys(names))


def installed(tracker: str) -> bool:
    """Whether `tracker`'s package can be imported here (without importing it)."""
    for module in _MODULES[tracker]:
        try:
            if importlib.util.find_spec(module) is not None:
                return True
        except (ImportError, ValueError):  # a broken install, or an entry set to None in sys.modules
            continue
    return False


def check_trackers(report_to: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The trackers a `--report-to` value asks for, resolved (`all` = the installed ones; `none` = []).

    Raises SeraInputError (exit code 2) for an unknown name or a tracker that is not installed, so that a
    run fails before it loads data or models. Cheap: nothing is imported."""
    names = parse_report_to(report_to)
    if names == ["all"]:
        return [name for name in TRACKERS if installed(name)]
    for name in names:
        if not installed(name):
            raise SeraInputError(f"--report-to {name}: {name} is not installed; install it (`pip install {name}`, "
                                 f"or sera's extra of the same name), or drop it from --report-to")
    return names


# -- the run-wide tracker ---------------------------------------------------------------------------

def start(config: Any, run_dir: str | Path, *, iterations: list[dict] = (), warnings: list[str] = (),
          sft_review: dict | None = None) -> "RunTracker":
    """Open the run's tracker(s) as `config.report_to` asks (a no-op tracker for `none`, and on every process
    but the main one). `iterations` and `warnings` are what a resumed run has already done: the step axis
    continues after their optimiser steps. `sft_review` (held-out diagnostics of the SFT model) is logged at
    step 0 of a fresh run."""
    report_to = getattr(config, "report_to", "none")
    names = check_trackers(report_to)
    if not names or not distributed.is_main():
        return RunTracker([])
    run_dir = Path(run_dir)
    options = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    backends: list[_Backend] = []
    try:
        for name in names:
            backends.append(_BACKENDS[name](run_dir, run_dir.resolve().name, options))
    except SeraInputError:
        for backend in backends:
            backend.close()
        raise
    tracker = RunTracker(backends, run_dir=run_dir, steps_done=sum(int(it.get("train_steps") or 0)
                                                                    for it in iterations),
                         warnings_seen=len(warnings))
    if not iterations and sft_review:
        tracker._log({f"sera/{key}": value for key, value in _flatten({"iteration": 0, **sft_review}).items()}, 0)
    return tracker


class RunTracker:
    """One tracker run across all of a `sera train` run's trainers (see the module's docstring)."""

    def __init__(self, backends: list["_Backend"], *, run_dir: Path | None = None, steps_done: int = 0,
                 warnings_seen: int = 0) -> None:
        self.backends = backends
        self.run_dir = run_dir
        self.steps_done = steps_done
        """Optimiser steps of the iterations logged so far: where the next trainer's step 0 sits."""
        self._warnings_seen = warnings_seen

    @property
    def active(self) -> bool:
        return bool(self.backends)

    def callbacks(self, iteration: Any = None) -> list[TrainerCallback]:
        """Trainer callbacks for one training pass of the run: [] when not tracking, or for a pass that is not
        one of the run's iterations (`iteration` not an int, e.g. a cross-fitting fold model)."""
        if not self.active or not isinstance(iteration, int):
            return []
        return [_ForwardTrainerLogs(self, self.steps_done)]

    def log_trainer(self, logs: dict, step: int) -> None:
        self._log({f"train/{key}": value for key, value in _flatten(logs).items()}, step)

    def log_iteration(self, entry: dict, warnings: list[str] = ()) -> None:
        """SeRA's record of the iteration that just ended (a `summary.json` entry), at the run-wide step where
        its training ended; `warnings` is the run's list so far (the new ones are logged as text)."""
        self.steps_done += int(entry.get("train_steps") or 0)
        if not self.active:
            return
        step = self.steps_done
        values = {f"sera/{key}": value for key, value in _flatten(entry).items()}
        values["sera/warnings"] = len(warnings)
        self._log(values, step)
        new = list(warnings)[self._warnings_seen:]
        self._warnings_seen = len(warnings)
        if new:
            for backend in self.backends:
                backend.text("sera/warnings_text", "\n".join(f"- {w}" for w in new), step,
                             f"iter_{entry.get('iteration')}")
        margins = self._selection_margins(entry.get("iteration"))
        if margins is not None:
            image = irm_histogram(*margins, iteration=entry.get("iteration"))
            for backend in self.backends:
                backend.histogram("sera/irm_margins", margins[0], step)
                backend.image("sera/irm_histogram", image, step, f"iter_{entry.get('iteration')}")
        self._flush()

    def close(self, summary: dict | None = None) -> None:
        """Log the run's final values (from `summary`) at its last step, and close every tracker run."""
        if not self.active:
            return
        if summary is not None:
            final = {"sera/final_iterate": summary.get("final_iterate"),
                     "sera/seconds_total": summary.get("seconds_total"),
                     "sera/warnings": len(summary.get("warnings", []))}
            self._log(final, self.steps_done)
        for backend in self.backends:
            backend.close()
        self.backends = []

    def _log(self, values: dict, step: int) -> None:
        numbers = {k: float(v) for k, v in values.items() if _is_number(v)}
        for backend in self.backends:
            if numbers:
                backend.scalars(numbers, step)

    def _flush(self) -> None:
        for backend in self.backends:
            backend.flush()

    def _selection_margins(self, iteration: Any):
        """(margins, selected) of iteration t's pool, from OUT/iter_<t>/selection.jsonl (None: it did not select)."""
        if self.run_dir is None or not isinstance(iteration, int):
            return None
        path = self.run_dir / f"iter_{iteration}" / "selection.jsonl"
        if not path.exists():
            return None
        import numpy as np

        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [r for r in rows if _is_number(r.get("margin"))]
        if not rows:
            return None
        return (np.array([float(r["margin"]) for r in rows]), np.array([bool(r.get("selected")) for r in rows]))


class _ForwardTrainerLogs(TrainerCallback):
    """Forwards one trainer's logs to the run's tracker, its step shifted by the optimiser steps before it."""

    def __init__(self, tracker: RunTracker, offset: int) -> None:
        self.tracker, self.offset = tracker, offset

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            self.tracker.log_trainer(logs, self.offset + state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.tracker._flush()


def irm_histogram(margins, selected, *, iteration: Any = None):
    """The pool's implicit reward margins, kept vs dropped, as an RGB image (H x W x 3 uint8 array)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    margins, selected = np.asarray(margins, dtype=float), np.asarray(selected, dtype=bool)
    fig = Figure(figsize=(5.0, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bins = np.histogram_bin_edges(margins, bins=min(40, max(5, len(margins) // 4)))
    ax.hist([margins[selected], margins[~selected]], bins=bins, stacked=True, color=["tab:blue", "tab:grey"],
            label=[f"kept ({int(selected.sum())})", f"dropped ({int((~selected).sum())})"])
    if selected.any() and (~selected).any():
        ax.axvline(float(margins[selected].min()), color="black", linestyle=":", linewidth=1)
    ax.axvline(0.0, color="tab:red", linewidth=0.8)
    ax.set_xlabel("implicit reward margin (chosen - rejected)")
    ax.set_ylabel("pairs")
    ax.set_title(f"iteration {iteration}: IRM of the pool" if iteration is not None else "IRM of the pool",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    return np.ascontiguousarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])


# -- the trackers -------------------------------------------------------------------------------------

class _Backend:
    """One tracker's run: numbers, text and images at a step."""

    def scalars(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def text(self, key: str, text: str, step: int, name: str) -> None:
        pass

    def image(self, key: str, rgb, step: int, name: str) -> None:
        pass

    def histogram(self, key: str, values, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def tensorboard_dir(run_dir: Path) -> Path:
    """Where TensorBoard's event files go: $TENSORBOARD_LOGGING_DIR, else OUT/runs."""
    env = os.environ.get("TENSORBOARD_LOGGING_DIR")
    return Path(os.path.expanduser(env)) if env else Path(run_dir) / "runs"


class _TensorBoard(_Backend):
    def __init__(self, run_dir: Path, name: str, options: dict) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as exc:
                raise SeraInputError(f"--report-to tensorboard: cannot import it ({exc}); "
                                     "`pip install tensorboard`") from exc
        self.writer = SummaryWriter(log_dir=str(tensorboard_dir(run_dir)))
        self.writer.add_text("sera/config", "```\n" + json.dumps(options, indent=2, default=str) + "\n```", 0)

    def scalars(self, values, step):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def text(self, key, text, step, name):
        self.writer.add_text(key, text, step)

    def image(self, key, rgb, step, name):
        self.writer.add_image(key, rgb, step, dataformats="HWC")

    def histogram(self, key, values, step):
        self.writer.add_histogram(key, values, step)

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()


class _Wandb(_Backend):
    def __init__(self, run_dir: Path, name: str, options: dict) -> None:
        import wandb

        self.wandb = wandb
        self.owned = wandb.run is None  # a run the caller already started (Python API) is logged into, not ended
        if not self.owned:
            self.run = wandb.run
            self.run.config.update({"sera": options}, allow_val_change=True)
            return
        directory = os.environ.get("WANDB_DIR") or str(run_dir)
        Path(directory).mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT),
                                  name=os.environ.get("WANDB_NAME", name), dir=directory, config=options)
        except Exception as exc:  # no API key in a non-interactive session, no network, ...
            raise SeraInputError(f"--report-to wandb: wandb could not start a run ({exc}); log in with `wandb login`, "
                                 "or set WANDB_MODE=offline to write the run under the output directory") from exc

    def scalars(self, values, step):
        self.run.log(values, step=step)

    def text(self, key, text, step, name):
        self.run.log({key: text}, step=step)

    def image(self, key, rgb, step, name):
        self.run.log({key: self.wandb.Image(rgb, caption=name)}, step=step)

    def histogram(self, key, values, step):
        self.run.log({key: self.wandb.Histogram(values)}, step=step)

    def close(self):
        if self.owned:
            self.run.finish()


class _Trackio(_Backend):
    def __init__(self, run_dir: Path, name: str, options: dict) -> None:
        with _default_env("TRACKIO_DIR", str(Path(run_dir) / "trackio")):
            import trackio  # reads TRACKIO_DIR once, at its first import in the process (docs/tracking.md)

        self.trackio = trackio
        try:
            self.run = trackio.init(project=os.environ.get("TRACKIO_PROJECT", PROJECT), name=name,
                                    config=options, resume="allow")
        except Exception as exc:
            raise SeraInputError(f"--report-to trackio: trackio could not start a run ({exc})") from exc

    def scalars(self, values, step):
        self.trackio.log(values, step=step)

    def text(self, key, text, step, name):
        self.trackio.log({key: text}, step=step)

    def image(self, key, rgb, step, name):
        self.trackio.log({key: self.trackio.Image(rgb, caption=name)}, step=step)

    def histogram(self, key, values, step):
        self.trackio.log({key: self.trackio.Histogram(list(map(float, values)))}, step=step)

    def close(self):
        self.trackio.finish()


def mlflow_tracking_uri(run_dir: Path) -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store in OUT/mlflow/ (MLflow 3 refuses a plain file store)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(run_dir) / 'mlflow' / 'mlflow.db').resolve()}"


class _MLflow(_Backend):
    def __init__(self, run_dir: Path, name: str, options: dict) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = mlflow_tracking_uri(run_dir)
        own_store = "MLFLOW_TRACKING_URI" not in os.environ
        try:
            if own_store:
                (Path(run_dir) / "mlflow").mkdir(parents=True, exist_ok=True)
            self.client = client = MlflowClient(tracking_uri=uri)
            experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                artifacts = (Path(run_dir) / "mlflow" / "artifacts").resolve().as_uri() if own_store else None
                experiment_id = client.create_experiment(experiment_name, artifact_location=artifacts)
            self.run_id = client.create_run(experiment_id, run_name=os.environ.get("MLFLOW_RUN_NAME", name)).info.run_id
            params = [Param(key, str(value)[:6000]) for key, value in sorted(options.items()) if value is not None]
            for first in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(self.run_id, params=params[first:first + 100])
        except Exception as exc:
            raise SeraInputError(f"--report-to mlflow: could not start a run at {uri} ({exc})") from exc

    def scalars(self, values, step):
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        try:
            for first in range(0, len(metrics), 1000):
                self.client.log_batch(self.run_id, metrics=metrics[first:first + 1000])
        except Exception as exc:
            raise SeraRuntimeError(f"mlflow: could not log metrics ({exc})") from exc

    def text(self, key, text, step, name):
        self.client.log_text(self.run_id, text, f"{key}/{name}.txt")

    def image(self, key, rgb, step, name):
        self.client.log_image(self.run_id, rgb, key=key, step=step)

    def close(self):
        self.client.set_terminated(self.run_id)


_BACKENDS = {"tensorboard": _TensorBoard, "wandb": _Wandb, "trackio": _Trackio, "mlflow": _MLflow}


# -- `sera sft`: transformers' own integrations -------------------------------------------------------

def sft_args(output_dir: str | Path, report_to: str | list[str] | None) -> dict:
    """`report_to` (checked; `all` = the installed ones among the four), `run_name` and `project` for
    `sera sft`'s SFTConfig: its single trainer logs through transformers' own integrations."""
    return {"report_to": check_trackers(report_to), "run_name": Path(output_dir).resolve().name,
            "project": os.environ.get("TRACKIO_PROJECT", PROJECT)}


def sft_staging_dir(output_dir: str | Path) -> Path:
    """Where `sera sft`'s tracker output is written while it trains: beside OUT, because OUT is replaced as a
    whole when the model is saved (:func:`sera.models.save_model`); :func:`sft_collect` moves it into OUT."""
    out = Path(output_dir).resolve()
    return out.parent / f".{out.name}.tracking"


@contextlib.contextmanager
def sft_environment(output_dir: str | Path, report_to: str | list[str] | None) -> Iterator[None]:
    """While `sera sft` builds and runs its trainer: point transformers' integrations at the output directory
    (TensorBoard's runs/, wandb/, trackio/, mlflow/mlflow.db; staged in :func:`sft_staging_dir` until the model
    is saved) unless the user's environment already names a place; the environment is restored afterwards."""
    trackers = check_trackers(report_to)
    stage = sft_staging_dir(output_dir)
    defaults = {"tensorboard": {"TENSORBOARD_LOGGING_DIR": str(stage / "runs")},
                "wandb": {"WANDB_DIR": str(stage), "WANDB_PROJECT": PROJECT},
                "trackio": {"TRACKIO_DIR": str(stage / "trackio")},
                "mlflow": {"MLFLOW_TRACKING_URI": mlflow_tracking_uri(stage), "MLFLOW_EXPERIMENT_NAME": PROJECT}}
    own_mlflow = "MLFLOW_TRACKING_URI" not in os.environ
    with contextlib.ExitStack() as stack:
        for tracker in trackers:
            for key, value in defaults[tracker].items():
                stack.enter_context(_default_env(key, value))
        if trackers and distributed.is_main():
            stage.mkdir(parents=True, exist_ok=True)
            if "mlflow" in trackers and own_mlflow:
                (stage / "mlflow").mkdir(exist_ok=True)
        yield


def sft_collect(output_dir: str | Path) -> None:
    """After `sera sft` saved its model into OUT: end a wandb run transformers left open, and move the staged
    tracker output (:func:`sft_staging_dir`) into OUT."""
    stage = sft_staging_dir(output_dir)
    if not distributed.is_main() or not stage.is_dir():
        return
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.finish()
    out = Path(output_dir)
    for entry in sorted(stage.iterdir()):
        target = out / entry.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        shutil.move(str(entry), str(target))
    stage.rmdir()


@contextlib.contextmanager
def _default_env(key: str, value: str) -> Iterator[None]:
    """`key=value` in the environment for the duration, unless the user set `key`."""
    if key in os.environ:
        yield
        return
    os.environ[key] = value
    try:
        yield
    finally:
        os.environ.pop(key, None)


# -- helpers --------------------------------------------------------------------------------------

def _flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as `a/b` keys (e.g. bootstrap_skipped/prompt_too_long)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)) or (hasattr(value, "item") and hasattr(value, "dtype")):
        try:
            return math.isfinite(float(value))
        except (TypeError, ValueError):
            return False
    return False
