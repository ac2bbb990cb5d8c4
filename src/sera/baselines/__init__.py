"""The baselines the SeRA paper compares against, run by the same code on the same data and budget.

    sera train --method daa         the plain DAA for T epochs on every pair (:func:`sera.steps.train_plain`)
    sera train --method curri-dpo   Curri-DPO (Pattnaik et al., 2024): :mod:`sera.baselines.curri_dpo`
    sera train --method spa         SPA (Kim et al., 2024): :mod:`sera.baselines.spa`

Each module holds the method's pure decisions (which pairs, in which order, with which labels), tested on
hand-built numbers; :func:`sera.loop.run` drives them through the same steps (:mod:`sera.steps`, :mod:`.steps`).
`docs/baselines.md` describes each method, its options, and where it departs from its paper.
"""

BASELINES_ON_PREVIOUS_REFERENCE = ("curri-dpo", "spa")
"""Methods whose reference is always the previous iterate (as in their papers), whatever `--reference` says."""
