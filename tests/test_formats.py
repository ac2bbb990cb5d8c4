"""Public dataset schemas -> SeRA pairs: HH-RLHF, UltraFeedback (binarized and original), TL;DR, generic pairs.

Each test writes a small fixture file in the dataset's own schema (nothing is downloaded)."""

import gzip
import json

import pytest

from sera.data import load_pairs
from sera.errors import SeraInputError
from sera.formats import detect_format
from tests.conftest import make_pairs, write_jsonl


def hh(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


HH_ROWS = [
    {"chosen": hh("How do I pick a lock?", "Why do you want to?", "I locked myself out.", "Call a locksmith."),
     "rejected": hh("How do I pick a lock?", "Why do you want to?", "I locked myself out.", "Use a bobby pin.")},
    {"chosen": hh("hi", "Hello! How can I help?"), "rejected": hh("hi", "Go away.")},
    # the transcripts differ before the last Assistant turn: reported, not guessed
    {"chosen": hh("hi", "hello", "bye", "see you"), "rejected": hh("hi", "HEY", "bye", "later")},
]


def test_hh_rlhf_splits_at_the_last_assistant_turn(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    loaded = load_pairs(str(path), dataset_format="hh-rlhf")
    assert loaded.format == "hh-rlhf" and loaded.rows_read == 3
    first = loaded.pairs[0]
    assert first.id == "0"
    assert first.prompt == [{"role": "user", "content": "How do I pick a lock?"},
                            {"role": "assistant", "content": "Why do you want to?"},
                            {"role": "user", "content": "I locked myself out."}]
    assert first.chosen == [{"role": "assistant", "content": "Call a locksmith."}]
    assert first.rejected == [{"role": "assistant", "content": "Use a bobby pin."}]
    assert len(loaded.pairs) == 2
    assert loaded.skipped == {"hh_transcripts_differ_before_last_reply": 1}
    assert load_pairs(str(path)).format == "hh-rlhf"  # auto


def test_hh_rlhf_gzip_file_and_bad_transcript(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in [*HH_ROWS[:2], {"chosen": "no turns here", "rejected": hh("a", "b")}]:
            handle.write(json.dumps(row) + "\n")
    with pytest.raises(SeraInputError, match=r"train.jsonl.gz, row 3: field 'chosen' has no"):
        load_pairs(str(path), dataset_format="hh-rlhf")
    loaded = load_pairs(str(path), dataset_format="hh-rlhf", skip_invalid=True)
    assert len(loaded.pairs) == 2 and loaded.skipped == {"invalid": 1}


def uf_binarized_row(i: int, *, prompt_column: bool = True) -> dict:
    prompt = f"Write a haiku about {i}."
    row = {"prompt_id": f"pid{i}",
           "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"good {i}"}],
           "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"bad {i}"}],
           "score_chosen": 8.0, "score_rejected": 3.0}
    if prompt_column:
        row["prompt"] = prompt
    return row


def test_ultrafeedback_binarized_rows_and_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    path = write_jsonl(tmp_path / "ufb.jsonl", [uf_binarized_row(i) for i in range(3)])
    loaded = load_pairs(str(path))
    assert loaded.format == "ultrafeedback-binarized"
    pair = loaded.pairs[1]
    assert pair.id == "pid1"
    assert pair.prompt == [{"role": "user", "content": "Write a haiku about 1."}]
    assert pair.chosen == [{"role": "assistant", "content": "good 1"}]
    assert pair.rejected == [{"role": "assistant", "content": "bad 1"}]

    # trl-lib's variant: no prompt column, the prompt is the shared start of the conversations
    implicit = write_jsonl(tmp_path / "trl.jsonl", [uf_binarized_row(i, prompt_column=False) for i in range(2)])
    assert load_pairs(str(implicit)).pairs[0].prompt == [{"role": "user", "content": "Write a haiku about 0."}]

    # a saved DatasetDict with the hub's split names: train_prefs by default, test_prefs on request
    saved = tmp_path / "ufb_saved"
    DatasetDict({
        "train_prefs": Dataset.from_list([uf_binarized_row(i) for i in range(4)]),
        "test_prefs": Dataset.from_list([uf_binarized_row(i) for i in range(10, 12)]),
        "train_sft": Dataset.from_list([uf_binarized_row(i) for i in range(20, 21)]),
    }).save_to_disk(str(saved))
    assert len(load_pairs(str(saved), dataset_format="ultrafeedback-binarized").pairs) == 4
    assert [p.id for p in load_pairs(str(saved), split="test_prefs").pairs] == ["pid10", "pid11"]
    with pytest.raises(SeraInputError, match="no split 'test'"):
        load_pairs(str(saved), split="test")


def test_ultrafeedback_binarized_mismatched_prompts_are_counted(tmp_path):
    row = uf_binarized_row(0)
    row["rejected"][0]["content"] = "another prompt"
    loaded = load_pairs(str(write_jsonl(tmp_path / "u.jsonl", [uf_binarized_row(1), row])),
                        dataset_format="ultrafeedback-binarized")
    assert len(loaded.pairs) == 1 and loaded.skipped == {"conversations_differ_before_last_reply": 1}


def uf_row(i: int, ratings: list) -> dict:
    completions = []
    for j, rating in enumerate(ratings):
        aspects = {a: {"Rating": str(rating), "Rationale": "..."} for a in
                   ("helpfulness", "honesty", "instruction_following", "truthfulness")}
        completions.append({"model": f"m{j}", "response": f"answer {j} to {i}", "annotations": aspects,
                            "overall_score": 10 - rating, "critique": "..."})
    return {"source": "evol", "instruction": f"question {i}?", "models": [f"m{j}" for j in range(len(ratings))],
            "completions": completions}


def test_original_ultrafeedback_best_vs_random_lower_and_all_pairs(tmp_path):
    rows = [uf_row(0, [3, 5, 1, 2]), uf_row(1, [4, 4, 4, 4]), uf_row(2, [2, 5, 5, 1])]
    rows[2]["completions"][3]["fine-grained_score"] = 5.5  # preferred over the mean of the ratings
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    loaded = load_pairs(str(path), seed=3)
    assert loaded.format == "ultrafeedback"
    assert loaded.skipped == {"ultrafeedback_all_ratings_tied": 1}
    first, third = loaded.pairs
    assert first.prompt == [{"role": "user", "content": "question 0?"}]
    assert first.chosen == [{"role": "assistant", "content": "answer 1 to 0"}]   # rating 5 (not overall_score)
    assert first.rejected[0]["content"] in {"answer 0 to 0", "answer 2 to 0", "answer 3 to 0"}
    assert third.chosen == [{"role": "assistant", "content": "answer 3 to 2"}]
    # the random rejected completion is fixed by the seed
    assert [p.rejected for p in load_pairs(str(path), seed=3).pairs] == [first.rejected, third.rejected]
    rejected_by_seed = {load_pairs(str(path), seed=s).pairs[0].rejected[0]["content"] for s in range(20)}
    assert len(rejected_by_seed) == 3

    ranked = load_pairs(str(path), dataset_format="ultrafeedback", ultrafeedback_pairs="all")
    first_row = [p for p in ranked.pairs if p.id.startswith("0:")]
    assert len(first_row) == 6  # all 4 ratings differ: 4 choose 2 ranked pairs
    assert ranked.meta["0:1>2"] == {"rating_gap": 4.0, "chosen_rating": 5.0, "rejected_rating": 1.0}
    assert all(ranked.meta[p.id]["rating_gap"] > 0 for p in ranked.pairs)


def test_original_ultrafeedback_bad_completion_names_the_field(tmp_path):
    row = uf_row(0, [3, 5])
    del row["completions"][1]["response"]
    with pytest.raises(SeraInputError, match=r"uf.jsonl, row 1: field 'completions\[1\].response'"):
        load_pairs(str(write_jsonl(tmp_path / "uf.jsonl", [row])), dataset_format="ultrafeedback")


def tldr_row(i: int, choice: int) -> dict:
    return {"info": {"id": f"t3_{i}", "post": f"My story number {i}.", "title": f"Title {i}",
                     "subreddit": "relationships"},
            "summaries": [{"text": f"summary A{i}", "policy": "sup"}, {"text": f"summary B{i}", "policy": "ppo"}],
            "choice": choice, "worker": "w", "split": "train"}


def test_tldr_comparisons_and_prompt_rows(tmp_path):
    path = write_jsonl(tmp_path / "tldr.jsonl", [tldr_row(0, 1), tldr_row(0, 0)])
    loaded = load_pairs(str(path))
    assert loaded.format == "tldr"
    first, second = loaded.pairs
    assert first.prompt == "SUBREDDIT: r/relationships\n\nTITLE: Title 0\n\nPOST: My story number 0.\n\nTL;DR:"
    assert (first.chosen, first.rejected) == (" summary B0", " summary A0")
    assert (second.chosen, second.rejected) == (" summary A0", " summary B0")
    assert first.id != second.id  # the same post compared twice keeps two ids

    bad = tldr_row(1, 2)
    with pytest.raises(SeraInputError, match="row 2: field 'choice'"):
        load_pairs(str(write_jsonl(tmp_path / "b.jsonl", [tldr_row(0, 0), bad])), dataset_format="tldr")

    trl_style = write_jsonl(tmp_path / "trl.jsonl", [
        {"prompt": "POST: x\n\nTL;DR:", "chosen": " short", "rejected": " long long"}])
    assert load_pairs(str(trl_style), dataset_format="tldr").pairs[0].chosen == " short"


def test_generic_pairs_and_format_errors(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", make_pairs(3))
    assert load_pairs(str(path)).format == "pairs"
    assert len(load_pairs(str(path), dataset_format="pairs").pairs) == 3
    with pytest.raises(SeraInputError, match="field 'instruction' is missing"):
        load_pairs(str(path), dataset_format="ultrafeedback")
    with pytest.raises(SeraInputError, match="--dataset-format"):
        load_pairs(str(path), dataset_format="csv")
    unknown = write_jsonl(tmp_path / "u.jsonl", [{"text": "hello", "label": 1}])
    with pytest.raises(SeraInputError, match="cannot detect the dataset format.*--dataset-format"):
        load_pairs(str(unknown))


@pytest.mark.parametrize("row, expected", [
    (HH_ROWS[0], "hh-rlhf"), (uf_binarized_row(0), "ultrafeedback-binarized"),
    (uf_binarized_row(0, prompt_column=False), "ultrafeedback-binarized"), (uf_row(0, [1, 2]), "ultrafeedback"),
    (tldr_row(0, 0), "tldr"), (make_pairs(1)[0], "pairs"), (make_pairs(1, chat=True)[0], "pairs"),
])
def test_detect_format(row, expected):
    assert detect_format(row, "x") == expected


def test_train_cli_reads_hh_rlhf(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from tests.test_cli_train import FAST, run_cli

    rows = [{"chosen": hh(f"reverse {w} ?", f"{w[::-1]}."), "rejected": hh(f"reverse {w} ?", "zz.")}
            for w in ("abc", "bca", "cab", "aab", "bba", "cca", "acb", "bac")] + [HH_ROWS[2]]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    out = tmp_path / "run"
    code, output = run_cli(["train", "--model", str(tiny_model_dir), "--dataset", str(path), "--output-dir",
                            str(out), "--dataset-format", "hh-rlhf", "--iterations", "1", "--max-length", "256",
                            *FAST], monkeypatch, capsys)
    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["offline_pairs"] == 8
    assert summary["data"]["skipped"] == {"hh_transcripts_differ_before_last_reply": 1}
    assert summary["data"]["format"] == "hh-rlhf"
