"""Each hook into a private name of TRL, transformers or accelerate (sera.trl_compat) is still there and shaped
as sera expects: a TRL release that moves one fails here, naming the hook, not deep inside a run."""

import inspect

import pytest

from sera import trl_compat


def test_every_private_hook_matches_the_installed_libraries():
    problems = trl_compat.check_hooks()
    assert not problems, "\n".join(problems)


def test_the_check_names_a_hook_that_changed(monkeypatch):
    from trl import DPOTrainer

    monkeypatch.delattr(DPOTrainer, "_precompute_ref_logps")
    problems = trl_compat.check_hooks()
    assert any("PretokenizedDPOTrainer" in p and "_precompute_ref_logps" in p and "trl>=1.16" in p for p in problems)


@pytest.mark.parametrize("name", ["_prepare_dataset", "_precompute_ref_logps"])
def test_the_pretokenized_trainer_overrides_exactly_trls_methods(name):
    from trl import DPOTrainer

    ours = inspect.signature(getattr(trl_compat.PretokenizedDPOTrainer, name))
    theirs = inspect.signature(getattr(DPOTrainer, name))
    assert list(ours.parameters) == list(theirs.parameters)


def test_no_private_trl_name_is_used_outside_the_compat_module():
    """The redesign's rule: a private TRL/transformers/accelerate name appears in sera.trl_compat only."""
    import re
    from pathlib import Path

    root = Path(trl_compat.__file__).parent
    pattern = re.compile(r"(_trl_utils\.|_trl_kernel\.|_hf_deepspeed_config_weak_ref|_is_accelerate_prepared|"
                         r"def _prepare_dataset|def _precompute_ref_logps|def _compute_loss|"
                         r"_set_signature_columns_if_needed|\.create_scheduler =|\.create_optimizer =)")
    offenders = [f"{path.relative_to(root)}:{n}" for path in root.rglob("*.py") if path.name != "trl_compat.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
