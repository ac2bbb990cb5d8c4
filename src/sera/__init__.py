"""SeRA: Self-Reviewing and Alignment of LLMs using Implicit Reward Margins (ICLR 2025).

    from sera import SeraConfig, SeraTrainer       # TRL-shaped: SeraTrainer(model, args, train_dataset,
                                                   #              processing_class).train()

The algorithm lives in :mod:`sera.loop`; its three components in :mod:`sera.selection`,
:mod:`sera.bootstrap` and :mod:`sera.rewards` (implicit reward, margin and the gamma ensemble).
"""

from sera.config import SeraConfig
from sera.trainer import SeraTrainer

__all__ = ["SeraConfig", "SeraTrainer"]
__version__ = "0.1.0"
