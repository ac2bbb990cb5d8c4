"""Training inside `compact_lm_head` (CPU speed-up) gives TRL's loss and gradients unchanged."""

import torch
from datasets import Dataset

from sera.config import TrainConfig
from sera.daa import get_daa
from sera.models import build_tiny_llama
from sera.scoring import compact_lm_head
from sera.training import SeraDPOTrainer, dpo_config
from tests.conftest import pair_rows


def test_compact_head_keeps_loss_and_gradients(tmp_path, tokenizer):
    rows = pair_rows(tokenizer, 4)
    model = build_tiny_llama(tokenizer, seed=2)
    trainer = SeraDPOTrainer(model=model, args=dpo_config(TrainConfig(batch_size=4, grad_accum=1), get_daa("dpo"), 1,
                                                          str(tmp_path)),
                             train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    # `compact_lm_head` changes TRL's head on devices without Triton only (on CUDA TRL is compact already and the
    # context does nothing), so this is a CPU check: with a GPU visible TRL moved the model to cuda; move it back.
    model.to("cpu")
    batch = trainer.data_collator(rows)  # on the CPU

    def loss_and_grads(compact: bool):
        model.zero_grad()
        if compact:
            with compact_lm_head("cpu"):
                loss = trainer.compute_loss(model, batch)
                loss.backward()
        else:
            loss = trainer.compute_loss(model, batch)
            loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain_loss, plain_grads = loss_and_grads(False)
    compact_loss, compact_grads = loss_and_grads(True)
    assert abs(compact_loss - plain_loss) < 1e-6
    for a, b in zip(plain_grads, compact_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_warmup_rounds_down_so_a_one_step_pass_still_learns():
    from sera.training import warmup_steps

    config = TrainConfig(batch_size=4, grad_accum=2, warmup_ratio=0.1)
    assert warmup_steps(config, epochs=1, num_rows=8) == 0      # one optimiser step: no warm-up
    assert warmup_steps(config, epochs=1, num_rows=800) == 10    # 100 steps
    assert warmup_steps(config, epochs=3, num_rows=81) == 3      # ceil(ceil(81/4)/2) = 11 per epoch, 33 steps
