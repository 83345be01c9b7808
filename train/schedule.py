"""Learning-rate schedule: linear warmup, then cosine decay to ``min_ratio`` of the peak."""
from __future__ import annotations

import math


def cosine_with_warmup(step: int, warmup_steps: int, max_steps: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= max_steps:
        return min_ratio
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, peak_lr: float, multiplier: float) -> float:
    lr = peak_lr * multiplier
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
