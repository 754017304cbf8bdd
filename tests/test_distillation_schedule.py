"""The staged schedule: stage switching by global step, per-group learning rates, freezing, config errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s3prl_upstream.distillation.losses import depth_weights, weighted_layer_mse
from s3prl_upstream.distillation.stages import Schedule, ScheduleError

PUBLISHED = {
    "positional_conv": {"steps": 3, "lr": 1e-3, "train": ["encoder.positional_embedding"], "positional_loss": 1.0},
    "encoder": {
        "steps": 4, "lr": 5e-5, "warmup_steps": 2, "train": "all",
        "freeze": ["encoder.positional_embedding", "encoder.relative_embedding"], "layer_loss": 1.0,
    },
}


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature_proj = nn.Linear(2, 2)
        self.encoder = nn.Module()
        self.encoder.positional_embedding = nn.Linear(2, 2)
        self.encoder.relative_embedding = nn.Embedding(4, 2)
        self.encoder.layers = nn.ModuleList([nn.Linear(2, 2)])


def test_depth_weights_follow_the_published_ramp():
    assert depth_weights(6) == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert depth_weights(1) == [1.0]
    assert weighted_layer_mse(torch.tensor([1.0, 3.0]), [1.0, 3.0]).item() == pytest.approx(2.5)


def test_stage_switch_and_learning_rates():
    schedule = Schedule.from_config(PUBLISHED)
    assert schedule.total_steps == 7
    assert [schedule.stage_at(s)[0] for s in range(9)] == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    groups = {g["trained_in"]: g for g in schedule.param_groups(Toy())}
    assert set(groups) == {(0,), (1,), ()}  # positional conv: stage 0 only; layers + proj: stage 1; rel. emb.: never
    pos, rest = schedule.lr_lambda((0,)), schedule.lr_lambda((1,))
    assert [pos(s) for s in range(5)] == [1e-3, 1e-3, 1e-3, 0.0, 0.0]
    assert [rest(s) for s in range(6)] == pytest.approx([0, 0, 0, 2.5e-5, 5e-5, 5e-5])  # warmup over 2 steps


def test_frozen_groups_do_not_move_under_adamw():
    model, schedule = Toy(), Schedule.from_config(PUBLISHED)
    groups = schedule.param_groups(model)
    optimizer = torch.optim.AdamW(groups, lr=1.0, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [schedule.lr_lambda(g["trained_in"]) for g in groups])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(2):  # stage 0: only the positional conv trains
        loss = sum(p.square().sum() for p in model.parameters())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"encoder.positional_embedding.weight", "encoder.positional_embedding.bias"}


def test_schedule_errors_name_the_stage():
    with pytest.raises(ScheduleError, match=r"stages.encoder: unknown key\(s\) \['lr_max'\]"):
        Schedule.from_config({"encoder": {**PUBLISHED["encoder"], "lr_max": 1}})
    with pytest.raises(ScheduleError, match="not both 0"):
        Schedule.from_config({"encoder": {"steps": 1, "lr": 1e-4}})
    with pytest.raises(ScheduleError, match="every stage has 0 steps"):
        Schedule.from_config({"encoder": {**PUBLISHED["encoder"], "steps": 0}})
    bad_prefix = Schedule.from_config({"encoder": {**PUBLISHED["encoder"], "freeze": ["encoder.pos_conv"]}})
    with pytest.raises(ScheduleError, match="'encoder.pos_conv' matches no student parameter"):
        bad_prefix.check(n for n, _ in Toy().named_parameters())
