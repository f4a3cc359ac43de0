"""Metrics during training (``logging.eval_every_n_steps``): a callback that evaluates the model
every N training batches on rank zero and logs the values to every logger."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from vaezoo.config import Config, ConfigError
from vaezoo.evaluation.disentanglement import DATASETS_WITH_FACTORS
from vaezoo.evaluation.evaluate import NotApplicable
from vaezoo.evaluation.training_metrics import EVAL_GROUPS, TrainingEvaluation
from vaezoo.training.callbacks import RandomState

if TYPE_CHECKING:
    from vaezoo.training.module import VAEModule


def check_eval_data(config: Config, datamodule: Any) -> None:
    """Refuse, before a run starts, evaluation groups that need ground-truth factors on data without them."""
    log = config.logging
    if log.eval_every_n_steps <= 0 or datamodule.ground_truth is not None:
        return
    needing = [name for name in log.eval_groups if EVAL_GROUPS[name].needs_ground_truth]
    if needing:
        raise ConfigError(
            f"logging.eval_groups = {log.eval_groups}: {', '.join(needing)} "
            f"{'needs' if len(needing) == 1 else 'need'} ground-truth factors, and "
            f"data.name = {config.data.name!r} has none (datasets with factors: "
            f"{', '.join(DATASETS_WITH_FACTORS)}; arrays when the .npz holds factors on a complete grid); "
            "remove them from logging.eval_groups"
        )


class EvaluateEveryNSteps(L.Callback):
    """Run evaluation groups (:data:`~vaezoo.evaluation.training_metrics.EVAL_GROUPS`) every
    ``every`` training batches and log them as ``eval/<metric>``, with the evaluation's wall time as
    ``eval/seconds``, at the step Lightning logs that batch's training values at.

    Like :class:`~vaezoo.training.callbacks.ImageGrids`: rank zero only, on the inference weights
    (the moving average under ``train.ema_decay``), in eval mode without gradients, on the same
    ``subset`` validation images every time, with the random generators (torch, numpy, Python,
    CUDA) seeded for it and put back after, so training draws what it would draw without it: the
    losses are the same with and without these metrics, and a resume is as exact as without.
    Under DDP the other ranks go on to their next batch and wait in its gradient all-reduce; the
    evaluation itself runs no collective, so nothing hangs (keep ``budget`` well under the process
    group's timeout).

    ``budget`` is the wall time one evaluation may take. The groups run in order; one whose last
    run would take it past the budget is skipped that time, and one that alone took longer than the
    budget is not run again (a group cannot be stopped midway: the first evaluation shows what each
    costs). Each is said once (through ``note``, by default Lightning's rank-zero info), with the
    setting to change. The first evaluation prints the groups, the subset, the budget and the time
    each group took; the end of training prints the time per evaluation. A group the model lacks
    (:class:`~vaezoo.evaluation.evaluate.NotApplicable`) or whose metric fails on the subset (a
    ``ValueError``) is left out for the rest of the run, with a note: a metric never stops training.
    """

    def __init__(
        self,
        every: int,
        groups: Sequence[str],
        subset: int = 500,
        budget: float = 30.0,
        seed: int = 0,
        note: Callable[[str], Any] | None = None,
    ) -> None:
        self.every, self.subset, self.budget, self.seed = every, subset, budget, seed
        self.note = note if note is not None else rank_zero_info  # what prints the notes
        self.groups = list(groups)  # the groups still run (not applicable / too slow ones leave)
        self.last_seconds: dict[str, float] = {}  # group -> its last run's wall time
        self.noted: set[str] = set()  # groups whose skip was already said
        self.seconds: list[float] = []  # wall time of every evaluation of this session
        self.examples: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        module = cast("VAEModule", pl_module)
        if not trainer.is_global_zero or module.batches_seen % self.every != 0:
            return
        state = RandomState.current()
        model = module.inference_model
        was_training = model.training
        start = time.perf_counter()
        try:
            torch.manual_seed(self.seed)
            with torch.no_grad():
                values, timings = self.evaluate(trainer, model, module.batches_seen)
        finally:
            model.train(was_training)
            RandomState.restore(state)
        seconds = time.perf_counter() - start
        self.seconds.append(seconds)
        metrics = {f"eval/{key}": float(value) for key, value in values.items()}
        metrics["eval/seconds"] = seconds
        step = module.batches_seen - 1  # where Lightning logs this batch's train/ values
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if len(self.seconds) == 1:
            self.note(self.first_note(module.batches_seen, seconds, timings))

    def evaluate(
        self, trainer: L.Trainer, model: Any, batches: int
    ) -> tuple[dict[str, float], dict[str, float]]:
        """The values of the groups that fit the budget, and the time each group took."""
        datamodule: Any = trainer.datamodule  # type: ignore[attr-defined]  # set by fit
        if self.examples is None:
            self.examples = datamodule.fixed_batch(self.subset, split="val")
        images, labels = self.examples
        ctx = TrainingEvaluation(model, datamodule, images, labels, self.subset, seed=self.seed)
        values: dict[str, float] = {}
        timings: dict[str, float] = {}
        spent = 0.0
        for name in list(self.groups):
            if not self.fits(name, spent, batches):
                continue
            start = time.perf_counter()
            try:
                values.update(EVAL_GROUPS[name].run(ctx))
            except NotApplicable as reason:
                self.groups.remove(name)
                self.note(f"eval: {name} is left out for {type(model).__name__}: {reason}")
                continue
            except ValueError as err:  # e.g. a metric's classifier on too small a subset: training goes on
                self.groups.remove(name)
                self.note(
                    f"eval: {name} failed after batch {batches} and is left out for the rest of the run "
                    f"({type(err).__name__}: {err}); a larger logging.eval_subset may help"
                )
                continue
            timings[name] = self.last_seconds[name] = time.perf_counter() - start
            spent += timings[name]
        return values, timings

    def fits(self, name: str, spent: float, batches: int) -> bool:
        """Whether group ``name`` runs now, given ``spent`` seconds of this evaluation (see the class)."""
        last = self.last_seconds.get(name)
        if last is not None and last > self.budget:
            self.groups.remove(name)
            self.note(
                f"eval: {name} took {last:.1f} s, more than logging.eval_budget_seconds = {self.budget:g} "
                "on its own: it is not run again (raise the budget or lower logging.eval_subset)"
            )
            return False
        if spent + (last or 0.0) <= self.budget and spent < self.budget:
            return True
        if name not in self.noted:
            self.noted.add(name)
            self.note(
                f"eval: {name} skipped after batch {batches}: {spent:.1f} s of logging.eval_budget_seconds "
                f"= {self.budget:g} were spent"
                + (f" and it took {last:.1f} s" if last is not None else "")
                + "; it runs whenever it fits (said once; raise the budget or lower logging.eval_subset)"
            )
        return False

    def first_note(self, batches: int, seconds: float, timings: dict[str, float]) -> str:
        images = len(self.examples[0]) if self.examples is not None else self.subset
        each = ", ".join(f"{name} {value:.2f} s" for name, value in timings.items())
        observed = [name for name in timings if EVAL_GROUPS[name].needs_ground_truth]
        factors = f", {self.subset} ground-truth observations for {', '.join(observed)}" if observed else ""
        return (
            f"eval: every {self.every} batches on rank zero: {', '.join(timings) or 'no group'} on "
            f"{images} validation images{factors}, budget {self.budget:g} s; the first evaluation, after "
            f"batch {batches}, took {seconds:.2f} s ({each}); each one's time is logged as eval/seconds"
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.seconds:
            count, mean = len(self.seconds), sum(self.seconds) / len(self.seconds)
            self.note(
                f"eval: {count} evaluation{'s' if count > 1 else ''} took {mean:.2f} s each on average "
                f"(at most {max(self.seconds):.2f} s), {sum(self.seconds):.1f} s in all"
            )
