"""Training across iterations: `--lr-schedule run` (one warm-up and decay) and `--carry-optimizer`."""

import json

import pytest

from sera.training import RunSchedule
from tests.test_cli_train import FAST, run_cli


def test_run_schedule_warms_up_once_then_decays_to_zero_across_offsets():
    first = RunSchedule("cosine", warmup=2, total=10)
    later = RunSchedule("cosine", warmup=2, total=10, offset=6)
    assert [first.multiplier(s) for s in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert later.multiplier(0) == pytest.approx(first.multiplier(6))  # the third iteration goes on from step 6
    assert later.multiplier(4) == pytest.approx(0.0)
    assert RunSchedule("linear", warmup=0, total=4).multiplier(2) == pytest.approx(0.5)
    assert RunSchedule("constant", warmup=1, total=4).multiplier(3) == 1.0


def learning_rates(run_dir) -> dict[int, list[float]]:
    rates: dict[int, list[float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "learning_rate" in entry and entry.get("event") is None:
            rates.setdefault(int(entry["iteration"]), []).append(float(entry["learning_rate"]))
    return rates


@pytest.mark.parametrize("schedule", ["per-iteration", "run"])
def test_iterations_restart_the_schedule_or_follow_one(schedule, tmp_path, tiny_model_dir, pairs_file, monkeypatch,
                                                       capsys):
    out = tmp_path / schedule
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(out), "--iterations", "3", *FAST, "--no-bootstrap", "--no-selection",
                            "--warmup-ratio", "0.25", "--lr-schedule", schedule,
                            *(["--carry-optimizer"] if schedule == "run" else [])], monkeypatch, capsys)
    assert code == 0, output
    rates = learning_rates(out)
    assert sorted(rates) == [1, 2, 3] and all(len(r) == 4 for r in rates.values())  # 16 pairs, batch 4
    peak = max(max(r) for r in rates.values())
    if schedule == "run":
        sequence = rates[1] + rates[2] + rates[3]
        top = sequence.index(peak)
        assert 0 < top < 4  # one warm-up, in the first iteration only
        assert all(a >= b for a, b in zip(sequence[top:], sequence[top + 1:]))  # then one decay, no restart
        assert rates[3][-1] < 0.1 * peak  # and ends near zero
    else:
        assert max(rates[2]) > 2 * rates[1][-1] and max(rates[3]) > 2 * rates[2][-1]  # each iteration climbs again
    assert json.loads((out / "state.json").read_text())["lr_steps_done"] == 12


def test_run_schedule_needs_a_known_decay(tmp_path, tiny_model_dir, pairs_file, monkeypatch, capsys):
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(pairs_file), "--output-dir",
                            str(tmp_path / "r"), *FAST, "--lr-schedule", "run", "--lr-scheduler-type",
                            "cosine_with_restarts"], monkeypatch, capsys)
    assert code == 2 and "--lr-schedule run supports" in output


def test_the_runs_optimizer_goes_on_counting_through_optimizers_argument(tokenizer, tmp_path):
    from sera.config import TrainConfig
    from sera.daa import get_daa
    from sera.models import build_tiny_llama
    from sera.training import build_optimizer, dpo_config, train_pass
    from tests.conftest import pair_rows

    rows = pair_rows(tokenizer, 8)
    policy = build_tiny_llama(tokenizer, seed=3)
    config = TrainConfig(batch_size=4, grad_accum=1, learning_rate=1e-2)
    optimizer = build_optimizer(policy, dpo_config(config, get_daa("dpo"), 1, str(tmp_path)))

    def one_pass(optimizer):
        train_pass(policy, tokenizer, rows, config, get_daa("dpo"), epochs=1, iteration=1,
                   metrics_path=tmp_path / "m.jsonl", optimizer=optimizer)

    def adam_steps() -> float:
        return float(next(iter(optimizer.state_dict()["state"].values()))["step"])

    one_pass(optimizer)
    assert adam_steps() == 2.0
    one_pass(optimizer)
    assert adam_steps() == 4.0  # the second trainer went on from the first one's Adam state
    one_pass(None)
    assert adam_steps() == 4.0  # a pass without it starts (and keeps) its own


def test_build_optimizer_groups_parameters_as_the_trainer_does(tokenizer, tmp_path):
    """SeRA builds the optimizer it hands to each trainer: it must be the one the Trainer would build. If
    transformers changes its optimizer choice or its weight-decay grouping, this names the difference."""
    from datasets import Dataset
    from transformers import Trainer

    from sera.config import TrainConfig
    from sera.daa import get_daa
    from sera.models import build_tiny_llama
    from sera.training import build_optimizer, dpo_config

    policy = build_tiny_llama(tokenizer, seed=3)
    args = dpo_config(TrainConfig(learning_rate=1e-2), get_daa("dpo"), 1, str(tmp_path))
    args.weight_decay = 0.1
    ours = build_optimizer(policy, args)
    trainer = Trainer(model=policy, args=args, train_dataset=Dataset.from_list([{"x": 1}]))
    theirs = trainer.create_optimizer()
    assert type(ours) is type(theirs), f"Trainer now builds {type(theirs).__name__}, sera {type(ours).__name__}"
    ours_groups = [({id(p) for p in g["params"]}, g["weight_decay"]) for g in ours.param_groups]
    theirs_groups = [({id(p) for p in g["params"]}, g["weight_decay"]) for g in theirs.param_groups]
    assert ours_groups == theirs_groups, "transformers' Trainer groups parameters for weight decay differently now"
    assert ours.defaults == theirs.defaults


def test_optimizer_state_round_trips_through_safetensors(tmp_path):
    import torch

    from sera.io import load_optimizer_state, save_optimizer_state

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    save_optimizer_state(tmp_path / "o.safetensors", optimizer.state_dict())
    restored = torch.optim.AdamW(model.parameters(), lr=0.5)
    restored.load_state_dict(load_optimizer_state(tmp_path / "o.safetensors"))
    assert restored.param_groups[0]["lr"] == 0.1
    for index, values in optimizer.state_dict()["state"].items():
        for name, value in values.items():
            assert torch.equal(restored.state_dict()["state"][index][name], value)
