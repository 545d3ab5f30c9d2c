"""The step loop the demo trainers share: learning-rate schedule, optimiser step, weight
EMA, smoothed-loss log and checkpoint cadence.

A trainer script builds its models, data and optimiser, then hands :class:`Trainer`
three hooks: the loss of one batch, the learning rate at a fraction of the budget, and
what to write at a checkpoint.  Everything else (the order of the step, gradient
clipping, when to log and when to save, resuming) is here once, so every script
steps, logs and checkpoints the same way.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .common import Clock, log

if TYPE_CHECKING:
    import torch


class ParamEMA:
    """Exponential moving average of a list of parameters.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the
    average follows the first steps closely instead of staying at the initial weights.
    """

    def __init__(self, params: Iterable[torch.Tensor], decay: float) -> None:
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.step = 0

    def update(self) -> None:
        import torch

        self.step += 1
        d = min(self.decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Inside the block the parameters hold the averaged values; after it, their own again."""
        import torch

        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)


def ema_weights(ema: ParamEMA | None) -> contextlib.AbstractContextManager[None]:
    """The EMA values in the parameters inside the block, or nothing to do without EMA."""
    return ema.swapped() if ema is not None else contextlib.nullcontext()


class Trainer:
    """Runs ``loss`` → backward → clip → optimiser step → EMA update for ``steps`` steps
    (exactly, when > 0: bit-reproducible) or else for ``minutes`` of wall-clock time.

    - ``loss()`` returns one batch's loss (with its graph); it may read :attr:`step`.
    - ``lr(fraction)`` is the learning rate at that fraction of the budget, set on every
      parameter group before the batch.
    - ``checkpoint(final)`` writes what the script ships: every ``save_every`` minutes
      with ``final=False`` and once at the end with ``final=True``.
    - ``log_extra()`` adds to the progress line logged every ``log_every`` steps.
    - ``after_step()`` runs after each optimiser step (and EMA update), before the log:
      for what a script does to its model between steps.

    A loss that is not finite stops the run before it reaches the weights: the last
    checkpoint stays as it was.
    """

    def __init__(
        self,
        *,
        params: Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        loss: Callable[[], torch.Tensor],
        lr: Callable[[float], float],
        checkpoint: Callable[[bool], None],
        minutes: float,
        steps: int = 0,
        ema: ParamEMA | None = None,
        save_every: float = 3.0,
        log_every: int = 50,
        loss_decay: float = 0.98,
        log_extra: Callable[[], str] | None = None,
        after_step: Callable[[], None] | None = None,
        clip: float = 1.0,
    ) -> None:
        self.params = list(params)
        self.optimizer = optimizer
        self.loss_fn = loss
        self.lr_at = lr
        self.checkpoint = checkpoint
        self.minutes, self.steps = minutes, steps
        self.clock = Clock(minutes, steps)
        self.ema = ema
        self.save_every = save_every
        self.log_every = max(1, log_every)
        self.loss_decay = loss_decay
        self.log_extra = log_extra
        self.after_step = after_step
        self.clip = clip
        self.step = 0
        self.start_step = 0
        self.elapsed_before = 0.0  # seconds trained before a resume
        self.lr = 0.0
        self.smoothed_loss: float | None = None
        self.last_save = 0.0

    def elapsed(self) -> float:
        """Seconds of training, counting the runs this one resumed."""
        return self.elapsed_before + self.clock.elapsed()

    def run(self) -> None:
        import torch

        self.clock = Clock(self.minutes, self.steps)  # the budget starts now, after the set-up
        self.last_save = 0.0
        while not self.clock.done(self.step):
            self.lr = self.lr_at(self.clock.fraction(self.step))
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            loss = self.loss_fn()
            value = loss.item()
            if not math.isfinite(value):
                raise SystemExit(f"the loss is {value} at step {self.step + 1}: training stopped "
                                 f"(try a lower --lr); the last checkpoint is unchanged")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            if self.after_step is not None:
                self.after_step()
            d = self.loss_decay
            self.smoothed_loss = value if self.smoothed_loss is None else d * self.smoothed_loss + (1 - d) * value
            if self.step % self.log_every == 0:
                extra = self.log_extra() if self.log_extra is not None else ""
                per_step = self.clock.elapsed() / max(1, self.step - self.start_step)
                log(f"step {self.step} loss {self.smoothed_loss:.4f}{extra} lr {self.lr:.2e} {per_step:.3f}s/step")
            if self.clock.elapsed() - self.last_save > 60 * self.save_every:
                self.checkpoint(False)
                self.last_save = self.clock.elapsed()
        self.checkpoint(True)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs besides the model weights: optimiser, EMA, step, time."""
        return {
            "opt": self.optimizer.state_dict(),
            "ema": self.ema.shadow if self.ema is not None else [],
            "step": self.step,
            "elapsed": self.elapsed(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the step count, schedule and EMA carry on."""
        self.optimizer.load_state_dict(state["opt"])
        if self.ema is not None:
            for s, v in zip(self.ema.shadow, state["ema"], strict=True):
                s.copy_(v)
            self.ema.step = int(state["step"])
        self.step = self.start_step = int(state["step"])
        self.elapsed_before = float(state["elapsed"])
