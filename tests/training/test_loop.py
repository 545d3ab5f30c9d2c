"""The step loop every demo trainer runs (training.loop.Trainer), on a tiny linear model."""

from __future__ import annotations

import math

import pytest

from training import common as C
from training.loop import ParamEMA, Trainer, ema_weights


def _problem(seed: int = 0):
    """A least-squares fit of y = x / 2 + 0.1 by a 1-in 1-out linear layer, in fixed batches."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Linear(1, 1)
    gen = torch.Generator().manual_seed(seed)

    def loss():
        x = torch.randn(16, 1, generator=gen)
        return torch.nn.functional.mse_loss(model(x), x / 2 + 0.1)

    return model, loss


def _trainer(model, loss, steps: int, saves: list, *, ema: bool = True, save_every: float = 60.0) -> Trainer:
    import torch

    params = list(model.parameters())
    return Trainer(
        params=params, optimizer=torch.optim.SGD(params, lr=0.3), loss=loss,
        lr=lambda frac: C.cosine_lr(0.3, frac), checkpoint=saves.append, steps=steps, minutes=0,
        ema=ParamEMA(params, 0.9) if ema else None, save_every=save_every, log_every=5,
    )


def test_trains_the_step_budget_exactly_and_checkpoints_once_at_the_end(capsys):
    model, batch_loss = _problem()
    losses: list[float] = []

    def loss():
        value = batch_loss()
        losses.append(value.item())
        return value

    saves: list[bool] = []
    trainer = _trainer(model, loss, 20, saves)
    trainer.run()
    assert trainer.step == 20 and len(losses) == 20
    assert saves == [True]
    assert trainer.smoothed_loss is not None and math.isfinite(trainer.smoothed_loss)
    assert max(losses[-3:]) < min(losses[:3]) / 4  # it fits the line
    lines = [line for line in capsys.readouterr().out.splitlines() if " step " in line]
    assert [line.split()[2] for line in lines] == ["5", "10", "15", "20"]
    assert all("loss" in line and "s/step" in line for line in lines)


def test_checkpoints_every_save_every_minutes_as_well():
    model, loss = _problem()
    saves: list[bool] = []
    _trainer(model, loss, 3, saves, save_every=0.0).run()  # "every 0 minutes": after every step
    assert saves == [False, False, False, True]


def test_ema_follows_the_weights_with_a_warm_up_and_is_swapped_in_for_saving():
    import torch

    model, loss = _problem()
    saves: list[bool] = []
    trainer = _trainer(model, loss, 1, saves)
    start = [p.detach().clone() for p in model.parameters()]
    trainer.run()
    ema = trainer.ema
    assert ema is not None and ema.step == 1
    d = min(0.9, 2 / 11)  # the warm-up decay after one update
    for s, p0, p in zip(ema.shadow, start, model.parameters()):
        assert torch.allclose(s, d * p0 + (1 - d) * p.detach())
        assert not torch.equal(s, p.detach())
    live = [p.detach().clone() for p in model.parameters()]
    with ema_weights(ema):
        assert all(torch.equal(p.detach(), s) for p, s in zip(model.parameters(), ema.shadow))
    assert all(torch.equal(p.detach(), q) for p, q in zip(model.parameters(), live))
    with ema_weights(None):  # no EMA: the weights as they are
        assert all(torch.equal(p.detach(), q) for p, q in zip(model.parameters(), live))


def test_after_step_sees_every_step_before_its_log_line(capsys):
    model, loss = _problem()
    seen: list[int] = []
    trainer = _trainer(model, loss, 5, [])
    trainer.after_step = lambda: seen.append(trainer.step)
    trainer.log_extra = lambda: f" after {seen[-1]}"
    trainer.run()
    assert seen == [1, 2, 3, 4, 5]
    assert " after 5 lr " in capsys.readouterr().out and trainer.step == 5


def test_a_loss_that_is_not_finite_stops_before_the_weights_change():
    import torch

    model, _ = _problem()
    before = [p.detach().clone() for p in model.parameters()]
    saves: list[bool] = []

    def nan_loss():
        return model(torch.ones(1, 1)).sum() * float("nan")

    with pytest.raises(SystemExit, match="loss is nan at step 1.*lower --lr.*last checkpoint is unchanged"):
        _trainer(model, nan_loss, 5, saves).run()
    assert saves == []
    assert all(torch.equal(p.detach(), q) for p, q in zip(model.parameters(), before))


def test_resuming_from_a_checkpoints_state_continues_as_if_never_stopped():
    import copy

    import torch

    model, loss = _problem()
    straight = _trainer(model, loss, 6, [])
    straight.run()

    # the same run, whose state is kept at its checkpoint after step 3 (as a script saves it)
    model2, loss2 = _problem()
    states: list[dict] = []

    def keep(final: bool) -> None:
        if run.step == 3:
            states.append(copy.deepcopy({"model": model2.state_dict(), **run.state_dict()}))

    run = _trainer(model2, loss2, 6, [], save_every=0.0)
    run.checkpoint = keep
    run.run()
    (state,) = states

    model3, loss3 = _problem()
    for _ in range(3):
        loss3()  # the data stream is the script's own: it is where step 3 left it
    model3.load_state_dict(state["model"])
    resumed = _trainer(model3, loss3, 6, [])
    resumed.load_state_dict(state)
    assert resumed.step == 3 and resumed.ema is not None and resumed.ema.step == 3
    resumed.run()
    assert resumed.step == 6
    for p, q in zip(model3.parameters(), model.parameters()):
        assert torch.equal(p, q)
    assert straight.ema is not None
    for s, t in zip(resumed.ema.shadow, straight.ema.shadow):
        assert torch.equal(s, t)
    assert resumed.elapsed() >= state["elapsed"]
