"""Component 1: keep the top-K pairs of the pool by implicit reward margin."""

from __future__ import annotations

import math

import numpy as np


def selection_size(pool_size: int, ratio: float, count: int | None = None) -> int:
    """K: an absolute count when given (capped at the pool), else ceil(ratio * pool), at least 1."""
    if count is not None:
        return min(count, pool_size)
    return min(pool_size, max(1, math.ceil(ratio * pool_size - 1e-9)))


def select_top_k(ids: list[str], margins: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k largest margins; ties are broken by id, so the result is deterministic."""
    order = sorted(range(len(ids)), key=lambda i: (-float(margins[i]), ids[i]))
    keep = np.zeros(len(ids), dtype=bool)
    keep[order[:k]] = True
    return keep
