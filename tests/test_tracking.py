"""`--report-to`: one tracker run per `sera train` run, with run-wide steps (docs/tracking.md).

TensorBoard's event files are read back; wandb (offline), trackio (local) and mlflow (SQLite under OUT) are
run in one subprocess where they are installed; a tracker that is not installed is exit code 2 before any work.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import struct
import subprocess
import sys
from itertools import accumulate
from pathlib import Path

import pytest

from sera.errors import SeraInputError
from sera.tracking import RunTracker, check_trackers, installed, parse_report_to, start
from tests.conftest import write_jsonl
from tests.test_cli_train import FAST, run_cli
from tests.test_sft import SFT_FAST, chat_rows

TRACKER_ENV = ("TENSORBOARD_LOGGING_DIR", "WANDB_DIR", "WANDB_PROJECT", "WANDB_NAME", "TRACKIO_DIR",
               "TRACKIO_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_NAME")


@pytest.fixture(autouse=True)
def _trackers_write_under_out(monkeypatch):
    for key in TRACKER_ENV:
        monkeypatch.delenv(key, raising=False)


def run_ends(summary: dict) -> list[int]:
    """The run-wide step where each iteration's training ended."""
    return list(accumulate(it["train_steps"] for it in summary["iterations"]))


# -- the option ----------------------------------------------------------------------------------

def test_report_to_values(monkeypatch):
    assert parse_report_to("none") == [] and parse_report_to(None) == [] and parse_report_to([]) == []
    assert parse_report_to("TensorBoard, wandb") == ["tensorboard", "wandb"]
    assert parse_report_to(["mlflow"]) == ["mlflow"]
    for bad, message in (("comet", "not one of"), ("none,wandb", "cannot be combined"), ("all,mlflow", "cannot")):
        with pytest.raises(SeraInputError, match=message):
            parse_report_to(bad)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    assert not installed("wandb")
    assert "wandb" not in check_trackers("all")  # all = the installed ones
    with pytest.raises(SeraInputError, match=r"wandb is not installed.*pip install wandb"):
        check_trackers("tensorboard,wandb")


def test_missing_tracker_is_exit_2_before_any_work(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--report-to", "mlflow", *FAST], monkeypatch, capsys)
    assert code == 2 and "mlflow is not installed" in output and "pip install mlflow" in output, output
    assert not out.exists()  # nothing was loaded, nothing written

    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(4))
    code, output = run_cli(["sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir",
                            str(tmp_path / "sft"), "--report-to", "mlflow", *SFT_FAST], monkeypatch, capsys)
    assert code == 2 and "mlflow is not installed" in output, output
    assert not (tmp_path / "sft").exists()

    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--report-to", "comet", *FAST], monkeypatch, capsys)
    assert code == 2 and "not one of" in output and not out.exists()


# -- the step axis, without training ------------------------------------------------------------------

def _recording_tracker(**kwargs) -> tuple[RunTracker, list]:
    from sera.tracking import _Backend

    logged: list = []

    class Recorder(_Backend):
        def scalars(self, values, step):
            logged.append(("scalars", step, values))

        def text(self, key, text, step, name):
            logged.append(("text", step, {key: text}))

        def image(self, key, rgb, step, name):
            logged.append(("image", step, {key: rgb.shape}))

    return RunTracker([Recorder()], **kwargs), logged


def test_run_wide_steps_offset_each_trainer_and_skip_other_passes(tmp_path):
    from types import SimpleNamespace

    from sera.io import write_jsonl as write_rows

    tracker, logged = _recording_tracker(run_dir=tmp_path)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    for t, steps in ((1, 4), (2, 3)):
        assert tracker.callbacks(f"crossfit-1/2") == []  # a fold model's pass is not one of the run's iterations
        (callback,) = tracker.callbacks(t)
        for step in range(1, steps + 1):
            state.global_step = step
            callback.on_log(None, state, None, logs={"loss": 1.0 / step, "note": "text is not a scalar"})
        if t == 2:
            write_rows(tmp_path / "iter_2" / "selection.jsonl",
                       [{"id": f"p{i}", "margin": i - 3.0, "selected": i >= 3} for i in range(8)])
        tracker.log_iteration({"iteration": t, "train_steps": steps, "selected": 5, "skipped": {"too_long": 1},
                               "labeller": "implicit"}, ["w1"] if t == 1 else ["w1", "w2"])
    train_steps = [step for kind, step, values in logged if kind == "scalars" and "train/loss" in values]
    assert train_steps == [1, 2, 3, 4, 5, 6, 7]  # 4 + 3 steps on one axis
    ends = [(step, values) for kind, step, values in logged if kind == "scalars" and "sera/iteration" in values]
    assert [step for step, _ in ends] == [4, 7]
    assert ends[1][1]["sera/selected"] == 5 and ends[1][1]["sera/skipped/too_long"] == 1
    assert ends[1][1]["sera/warnings"] == 2 and "sera/labeller" not in ends[1][1]
    assert [(step, v) for kind, step, v in logged if kind == "text"] == [(4, {"sera/warnings_text": "- w1"}),
                                                                        (7, {"sera/warnings_text": "- w2"})]
    assert [step for kind, step, _ in logged if kind == "image"] == [7]  # only the iteration that selected

    resumed, _ = _recording_tracker(run_dir=tmp_path, steps_done=7)  # what start() sets up after --resume
    assert resumed.callbacks(3)[0].offset == 7


def test_no_tracker_is_a_no_op(tmp_path):
    from types import SimpleNamespace

    tracker = start(SimpleNamespace(report_to="none", to_dict=dict), tmp_path, sft_review={"val_irm_accuracy": 0.5})
    assert not tracker.active and tracker.callbacks(1) == []
    tracker.log_iteration({"iteration": 1, "train_steps": 3})
    tracker.close({"final_iterate": 1})
    assert list(tmp_path.iterdir()) == []


# -- a real run, read back ------------------------------------------------------------------------------

def test_tensorboard_event_files_hold_trainer_loss_and_sera_iterations(tmp_path, tiny_model_dir, pairs_file,
                                                                      monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--iterations", "3", *FAST, "--validation-ratio", "0.15",
                            "--report-to", "tensorboard"], monkeypatch, capsys)
    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    ends = run_ends(summary)

    events = EventAccumulator(str(out / "runs"), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()

    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    steps = [step for step, _ in loss]
    assert steps == sorted(set(steps)) and steps[-1] == ends[-1]  # run-wide: one increasing axis to the last step
    assert any(step > ends[0] for step in steps)  # later iterations continue after the first one's steps
    trainer_losses = [m["loss"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                      if "loss" in m]  # every trainer's own log, in order
    assert [value for _, value in loss] == pytest.approx(trainer_losses, rel=1e-5)

    for key in ("pool_size", "selected", "train_steps", "final_loss", "seconds_training", "seconds_scoring",
                "seconds_generating", "val_irm_accuracy"):
        points = {e.step: e.value for e in events.Scalars(f"sera/{key}")}
        for it, end in zip(summary["iterations"], ends):
            assert points[end] == pytest.approx(it[key], rel=1e-5, abs=1e-6), key
    for key in ("generated", "mean_margin_selected", "mean_margin_dropped"):
        points = {e.step: e.value for e in events.Scalars(f"sera/{key}")}
        assert [points[end] for end in ends[1:]] == pytest.approx([it[key] for it in summary["iterations"][1:]])
    assert events.Scalars("sera/val_irm_accuracy")[0].step == 0  # the SFT model's review
    assert events.Scalars("sera/warnings")[-1].value == len(summary["warnings"])
    assert [e.step for e in events.Images("sera/irm_histogram")] == ends[1:]  # the two selecting iterations
    assert "sera/irm_margins" in tags["histograms"]
    assert (out / "final" / "README.md").exists()


def test_sft_report_to_tensorboard_writes_under_output_dir(tmp_path, tiny_model_dir, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    out = tmp_path / "sft"
    code, output = run_cli(["sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir", str(out),
                            *SFT_FAST, "--report-to", "tensorboard"], monkeypatch, capsys)
    assert code == 0, output
    assert (out / "model.safetensors").exists() and not (tmp_path / ".sft.tracking").exists()
    events = EventAccumulator(str(out / "runs"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # restored


# -- wandb (offline), trackio (local), mlflow (SQLite), where installed ----------------------------------

OTHER_TRACKERS = [name for name in ("wandb", "trackio", "mlflow") if installed(name)]


@pytest.mark.skipif(not OTHER_TRACKERS, reason="none of wandb, trackio, mlflow is installed")
def test_wandb_trackio_mlflow_offline_under_output_dir(tmp_path, tiny_model_dir, pairs_file):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in TRACKER_ENV}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", HF_HUB_OFFLINE="1", SERA_NO_PROGRESS="1",
               TQDM_DISABLE="1", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    args = ["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir", str(out),
            "--iterations", "2", *FAST, "--validation-ratio", "0.15", "--report-to", ",".join(OTHER_TRACKERS)]
    done = subprocess.run([sys.executable, "-c", "import sys; from sera.cli import main; sys.argv[0] = 'sera'; main()",
                           *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    ends = run_ends(summary)
    selected = [it["selected"] for it in summary["iterations"]]

    if "wandb" in OTHER_TRACKERS:
        (run_file,) = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
        history = [h for h in _wandb_history(Path(run_file))]
        loss_steps = [h["_step"] for h in history if "train/loss" in h]
        assert loss_steps == sorted(loss_steps) and loss_steps[-1] == ends[-1] and loss_steps[0] < ends[0]
        at_end = {}
        for h in history:
            at_end.setdefault(h["_step"], {}).update(h)
        assert [at_end[end]["sera/selected"] for end in ends] == selected
        assert at_end[ends[1]]["sera/irm_histogram/_type"] == "image-file"
        assert glob.glob(str(out / "wandb" / "offline-run-*" / "files" / "media" / "images" / "sera" / "*.png"))

    if "trackio" in OTHER_TRACKERS:
        (db,) = glob.glob(str(out / "trackio" / "*.db"))
        with sqlite3.connect(db) as connection:
            rows = [(step, json.loads(metrics)) for step, metrics in
                    connection.execute("SELECT step, metrics FROM metrics ORDER BY id")]
        loss_steps = [step for step, m in rows if "train/loss" in m]
        assert loss_steps == sorted(loss_steps) and loss_steps[-1] == ends[-1]
        assert [m["sera/selected"] for step, m in rows if "sera/selected" in m and step in ends] == selected
        assert any(m.get("sera/irm_histogram", {}).get("_type") == "trackio.image" for step, m in rows
                   if step == ends[1])

    if "mlflow" in OTHER_TRACKERS:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow' / 'mlflow.db'}")
        (run,) = client.search_runs([client.get_experiment_by_name("sera").experiment_id])
        assert run.info.run_name == "run" and run.data.params["daa"] == "dpo"
        loss_steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(loss_steps)[-1] == ends[-1] and len(set(loss_steps)) == len(loss_steps)
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "sera/selected")}
        assert [history[end] for end in ends] == selected
        images = client.list_artifacts(run.info.run_id, "images")
        assert any("irm_histogram" in f.path for f in images)
        assert str(out / "mlflow" / "artifacts") in run.info.artifact_uri.replace("file://", "")


def _wandb_history(path: Path) -> list[dict]:
    """History rows of an offline wandb run (`run-*.wandb`: LevelDB-log records of protobuf messages)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, buffer, rows = path.read_bytes(), 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        position += 7
        if kind == 0 and length == 0:
            position += left - 7
            continue
        buffer += data[position:position + length]
        position += length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buffer)
            buffer = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(_history_row(record.history.item))
    return rows


def _history_row(items) -> dict:
    """{key: value}; wandb stores `a/b` keys split into parts, and a media value as one entry per field."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}
