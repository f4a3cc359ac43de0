"""Training in several processes (Lightning DDP): the strategy vaezoo's training needs, and a
message naming the process whose death stopped a run.

When one process of a DDP run dies, the others fail in their next collective operation (gloo:
"Connection reset by peer"; NCCL alike) with a traceback that does not say which process went.
:class:`DeadProcessReport` adds the missing line: the rank and pid that ended and how (a signal, an
exit code), on every process that is still there to say it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import lightning as L
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies import DDPStrategy, Strategy, StrategyRegistry
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vaezoo.training.interrupts import RunInterrupted

EXIT_WAIT_SECONDS = 3.0  # a failed collective may be seen a moment before the peer's exit is


def strategy_for(strategy: str | Strategy, processes: int, automatic_optimization: bool) -> str | Strategy:
    """The Trainer's ``strategy`` for ``train.strategy`` and ``processes`` (all nodes together).

    A model with an auxiliary optimizer (FactorVAE's discriminator) is trained by manual
    optimisation: two backward passes per batch, the second reaching the discriminator alone. DDP
    all-reduces every parameter's gradient in each pass unless told that a pass may leave some
    without one (``find_unused_parameters``); otherwise the next step fails ("parameters that were
    not used in producing the loss"). So DDP strategies, and ``"auto"`` where it means DDP (more
    than one process), get ``find_unused_parameters=True`` then. Anything else is returned as is.
    """
    if not isinstance(strategy, str):
        return strategy  # a Strategy object is the caller's own choice
    interactive = hasattr(sys, "ps1") or bool(sys.flags.interactive)  # Lightning forks in notebooks
    name = ("ddp_fork" if interactive else "ddp") if strategy == "auto" and processes > 1 else strategy
    entry = StrategyRegistry[name] if name in StrategyRegistry else None
    if automatic_optimization or entry is None or entry["strategy"] is not DDPStrategy:
        return strategy
    return DDPStrategy(**{**entry["init_params"], "find_unused_parameters": True})


def ending(returncode: int) -> str:
    """How a process ended, from its return code: ``"was killed by SIGKILL"``, ``"exited with code 1"``."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class DeadProcessReport(L.Callback):
    """When training fails because another process of the run has ended, say which one.

    Process 0 of a node launched the others (Lightning's subprocess launcher) and holds them: it
    names each that has ended, by global rank, pid and signal or exit code. A process it launched
    names process 0 when its parent is gone. The message goes to stderr, before the traceback of
    the failed collective; the traceback is not replaced. A run without several processes is
    never affected.
    """

    def __init__(self) -> None:
        self.parent_pid = os.getppid()  # the launching process, for the processes Lightning starts

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.parent_pid = os.getppid()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.world_size <= 1 or isinstance(exception, (RunInterrupted, SIGTERMException)):
            return  # a single process, or a stop every process makes on purpose (a signal)
        ended = self.ended_processes(trainer)
        if ended:
            print(
                f"[rank {trainer.global_rank}] vaezoo: training process {'; '.join(ended)}, so rank "
                f"{trainer.global_rank} stops too ({type(exception).__name__}: {first_line(exception)})",
                file=sys.stderr,
                flush=True,
            )

    def ended_processes(self, trainer: L.Trainer) -> list[str]:
        """``"rank R (pid P) <how it ended>"`` for each process of the run this one knows has ended."""
        deadline = time.monotonic() + EXIT_WAIT_SECONDS
        children: list[subprocess.Popen] = list(getattr(trainer.strategy.launcher, "procs", []))
        first_rank = trainer.node_rank * trainer.num_devices  # this node's process 0
        ended = []
        for local_rank, child in enumerate(children, start=1):
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue  # still running: it has not died (it may fail on its own, and say so)
            if child.returncode != 0:
                ended.append(f"rank {first_rank + local_rank} (pid {child.pid}) {ending(child.returncode)}")
        if not children and self.launched_by_lightning(trainer) and self.parent_gone(deadline):
            ended.append(f"rank {first_rank} (pid {self.parent_pid}, which launched this process) ended")
        return ended

    def launched_by_lightning(self, trainer: L.Trainer) -> bool:
        environment = getattr(trainer.strategy, "cluster_environment", None)
        return isinstance(environment, LightningEnvironment) and trainer.local_rank > 0

    def parent_gone(self, deadline: float) -> bool:
        """The launching process has ended (this one was handed to another parent)."""
        while os.getppid() == self.parent_pid:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


def first_line(exception: BaseException, limit: int = 200) -> str:
    text = str(exception).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
