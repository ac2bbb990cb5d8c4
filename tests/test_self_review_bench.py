"""A tiny run of `benchmarks/self_review.py` (issue 9's evidence harness) and its aggregation rules.

No timing and no result is asserted: the smoke run checks that the grid runs end to end through
`sera.loop.run`, grades with the world's gold reward and writes JSON + markdown; the rules (beta per
row on validation, the recommended mode on world A's validation only, differences paired by seed,
share of the oracle gap) are checked on made-up records.
"""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("self_review.py")


def test_filler_world_gold_penalises_the_filler():
    from sera.worlds.filler import FILLER_PENALTY, gold_reward, has_filler

    assert gold_reward("dcba=", "abcd") == 1.0
    assert gold_reward("dcba=", "abcd=") == FILLER_PENALTY
    assert gold_reward("dcba=", "abd=") == 0.5 * FILLER_PENALTY
    assert has_filler("ab=") and not has_filler("ab")


def test_filler_world_writes_its_own_fields(tmp_path, monkeypatch):
    """World B shares its build with the demo world; it must keep its gold reward and its filler fields."""
    from sera.worlds.filler import (
        FILLER_PENALTY,
        GOLD_SPEC,
        FillerWorldConfig,
        build_filler_world,
    )

    monkeypatch.setenv("SERA_NO_PROGRESS", "1")
    config = FillerWorldConfig(seed=2, filler_share=1.0, sft_steps=2, sft_demonstrations=16, pair_prompts=12,
                               validation_prompts=2, test_prompts=2, hidden_size=16)
    world = build_filler_world(config, tmp_path / "filler", log=lambda _: None)
    info = json.loads((world.root / "world.json").read_text())
    assert info["world"] == "filler" and info["gold"] == GOLD_SPEC and info["config"]["filler_share"] == 1.0
    assert info["demonstration_filler"] == 1.0  # every demonstration has the habit...
    assert info["demonstration_gold"] <= FILLER_PENALTY  # ...and is graded by this world's gold, not sorting's
    meta = list(world.meta().values())
    assert len(meta) == info["pairs"] == 12 and all({"filler_chosen", "filler_rejected"} <= set(m) for m in meta)
    assert info["pairs_filler_chosen"] == pytest.approx(sum(m["filler_chosen"] for m in meta) / len(meta))
    assert info["pairs_filler_rejected"] == pytest.approx(sum(m["filler_rejected"] for m in meta) / len(meta))
    assert "writers" not in info


def test_smoke_run_writes_json_and_markdown(bench, tmp_path):
    output = tmp_path / "out" / "self-review.json"
    sizes = json.dumps({"pair_prompts": 24, "validation_prompts": 8, "test_prompts": 8,
                        "sft_demonstrations": 64, "sft_steps": 4, "sft_batch_size": 16})
    results = bench.main(["--quick", "--worlds", "filler", "--rows", "dpo,oracle", "--betas", "0.5",
                          "--world-sizes", sizes, "--iterations", "2", "--output", str(output),
                          "--work-dir", str(tmp_path / "work")])
    saved = json.loads(output.read_text())
    assert saved["runs_finished"] == saved["runs_planned"] == 2 and not saved["partial"]
    assert not saved["runs_failed"], saved["runs_failed"]
    world = saved["worlds"][0]
    assert world["world"] == "filler" and "greedy_worse_than_sample" in world
    rows = {t["row"]: t for t in saved["table"]}
    assert set(rows) == {"sft", "dpo", "oracle"} and rows["oracle"]["minus_dpo"] is not None
    oracle = next(r for r in saved["runs"] if r["row"] == "oracle")
    assert oracle["options"]["bootstrap_labeller"] == "judge:gold:sera.worlds.filler:gold_reward"
    assert oracle["diagnostics"][-1]["generated_label_agrees_with_gold"] is not None
    assert "filler" in oracle["test"]
    assert results["recommended"] is None  # no SeRA variant besides the oracle was run
    assert [f["row"] for f in saved["flag_summary"]] == ["oracle"]
    assert "World B" in output.with_suffix(".md").read_text()


def _record(world, row, seed, beta, val, test):
    return {"world": world, "row": row, "seed": seed, "beta": beta, "validation": {"gold": val},
            "test": {"gold": test, "win_rate_vs_sft": 0.5, "length": 5.0}, "test_greedy": {"gold": test},
            "warnings": [], "diagnostics": []}


def test_beta_recommended_mode_and_oracle_gap_rules(bench):
    runs = []
    for seed in (1, 2):
        for world in ("sorting", "filler"):
            runs += [_record(world, "dpo", seed, 0.1, 0.5, 0.50), _record(world, "dpo", seed, 0.5, 0.4, 0.90),
                     _record(world, "oracle", seed, 0.1, 0.7, 0.70), _record(world, "oracle", seed, 0.5, 0.6, 0.70),
                     _record(world, "likelihood", seed, 0.1, 0.6, 0.60), _record(world, "quota", seed, 0.1, 0.55, 0.65)]
    runs.append(_record("filler", "quota", 1, 0.5, 0.99, 0.99))  # world B validation must not pick the mode
    betas = bench.choose_betas(runs)
    assert betas["sorting/dpo"]["beta"] == 0.1  # by validation, although beta 0.5 tests better
    recommended = bench.choose_recommended(betas, ["likelihood", "quota"])
    assert recommended["row"] == "likelihood"
    worlds = [{"world": w, "seed": s, "sft": {"test": {"gold": 0.4, "length": 5.0}, "test_greedy": {"gold": 0.3}}}
              for w in ("sorting", "filler") for s in (1, 2)]
    rows = {(t["world"], t["row"]): t for t in bench.table(runs, betas, worlds, ["dpo", "oracle", "likelihood"])}
    likelihood = rows[("sorting", "likelihood")]
    assert likelihood["minus_dpo"]["mean"] == pytest.approx(0.1)
    assert likelihood["oracle_gap_closed"] == pytest.approx(0.5)
    assert bench.warning_kinds(["iteration 2: the bootstrap labeller agrees with only 40% of held-out labels",
                                "guard: iterate 1 scored best"]) == ["labeller", "guard"]
