"""A linear probe trained identically for every encoder: standardized features, multinomial logistic regression."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ProbeSettings:
    """Full-batch AdamW on the cross-entropy; weights start at zero, so the probe is deterministic (convex loss)."""

    epochs: int = 300
    lr: float = 0.01
    weight_decay: float = 1e-2


def probe_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, settings: ProbeSettings = ProbeSettings()
) -> float:
    """Train on (N, F) features and (N,) int labels, return the accuracy in [0, 1] on the test set.

    Features are standardized with the train set's mean and std (constant features stay 0).
    """
    x_train = torch.from_numpy(np.asarray(train_x, dtype=np.float32))
    x_test = torch.from_numpy(np.asarray(test_x, dtype=np.float32))
    y_train = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
    y_test = torch.from_numpy(np.asarray(test_y, dtype=np.int64))
    mean, std = x_train.mean(dim=0), x_train.std(dim=0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    linear = torch.nn.Linear(x_train.shape[1], num_classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.AdamW(linear.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    with torch.enable_grad():
        for _ in range(settings.epochs):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(linear(x_train), y_train).backward()
            optimizer.step()
    with torch.no_grad():
        return float((linear(x_test).argmax(dim=1) == y_test).float().mean())
