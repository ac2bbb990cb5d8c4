"""SeRA: Self-Reviewing and Alignment of LLMs using Implicit Reward Margins (ICLR 2025).

The algorithm lives in :mod:`sera.loop`; its three components in :mod:`sera.selection`,
:mod:`sera.bootstrap` and :mod:`sera.rewards` (implicit reward, margin and the gamma ensemble).
"""

__version__ = "0.1.0"
