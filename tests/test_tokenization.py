"""SeRA tokenizes pairs once, and must produce exactly the ids TRL's DPOTrainer would."""

import pytest
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from sera.data import PreferencePair
from sera.tokenization import PairTokenizer, sequence_key
from tests.conftest import make_pairs


@pytest.mark.parametrize("chat", [False, True])
def test_ids_match_trl_prepare_dataset(tmp_path, tokenizer, chat):
    rows = make_pairs(6, chat=chat)
    trl_args = DPOConfig(output_dir=str(tmp_path), max_length=None, report_to=[], bf16=False)
    # TRL's own tokenization, called the way its __init__ does (the method needs no model state).
    reference = DPOTrainer._prepare_dataset(_Stub(tokenizer), Dataset.from_list(rows), tokenizer, trl_args, "train")
    ours = PairTokenizer(tokenizer, max_length=10_000)
    for row, expected in zip(rows, reference):
        got = ours.pair(PreferencePair(row["id"], row["prompt"], row["chosen"], row["rejected"]))
        assert got.prompt_ids == expected["prompt_ids"]
        assert got.chosen_ids == expected["chosen_ids"]
        assert got.rejected_ids == expected["rejected_ids"]


def test_responses_end_with_eos(tokenizer):
    pair = PairTokenizer(tokenizer, 1000).pair(PreferencePair("0", "reverse ab ?", " ba.", " x."))
    assert pair.chosen_ids[-1] == tokenizer.eos_token_id == pair.rejected_ids[-1]


def test_truncation_keeps_start_and_reports_long_prompts(tokenizer):
    prompt = "reverse abcd ?"  # 14 characters = 14 tokens
    short = PairTokenizer(tokenizer, max_length=16).pair(PreferencePair("0", prompt, " dcba.", " x."))
    assert len(short.prompt_ids) == 14 and len(short.chosen_ids) == 2 and len(short.rejected_ids) == 2
    assert PairTokenizer(tokenizer, max_length=14).pair(PreferencePair("0", prompt, " dcba.", " x.")) is None


def test_sequence_key_separates_prompt_from_completion():
    assert sequence_key([1, 2], [3]) != sequence_key([1], [2, 3])
    assert sequence_key([1, 2], [3]) == sequence_key([1, 2], [3])


class _Stub:
    """Just enough of a DPOTrainer for its `_prepare_dataset` (which reads `_tokenizer`)."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
