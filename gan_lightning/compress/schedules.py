"""When compression events happen and how much each removes: schedules as values.

A schedule is chosen once from its name (:func:`make_schedule`) and then only asked
questions: at which epochs (or training batches) its events fall, and what cumulative
fraction an event's target is. Adding a schedule is adding a class to ``SCHEDULES``.
Amounts are cumulative: the fraction of the layer's *original* weights or units removed
after the event.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

from gan_lightning.errors import ConfigError

Unit = Literal["epoch", "batch"]


def event_epoch(configured: Optional[int], max_epochs: Optional[int], flag: str) -> int:
    """The configured epoch of a compression event, or by default half of ``max_epochs`` so
    that the second half of training fine-tunes."""
    if configured is not None:
        return configured
    if max_epochs is None or max_epochs < 2:
        raise ConfigError(f"{flag} has no default without --trainer.max_epochs >= 2: set it")
    return max_epochs // 2


def polynomial_sparsity(step: int, start: int, end: int, final: float, power: int = 3) -> float:
    """Zhu & Gupta (2017): 0 before ``start``, ``final`` from ``end`` on, a cubic ramp between."""
    if step <= start:
        return 0.0
    if step >= end:
        return final
    return final * (1.0 - (1.0 - (step - start) / (end - start)) ** power)


def iterative_fraction(round_index: int, rounds: int, final: float) -> float:
    """Cumulative sparsity after round ``round_index`` (1-based) of ``rounds`` that each remove
    the same share of the remaining weights, ending at ``final``."""
    return 1.0 - (1.0 - final) ** (round_index / rounds)


@dataclass(frozen=True)
class Schedule:
    """Base of the schedules: ``events`` are epochs (``unit`` epoch, counted from 0) or
    training batches (``unit`` batch, counted from 0), in order."""

    name: ClassVar[str]
    unit: ClassVar[Unit] = "epoch"
    verified: ClassVar[bool] = False  # each event is a trial, kept only if the quality metric allows it

    def events(self, max_epochs: Optional[int]) -> list[int]:
        raise NotImplementedError

    def target(self, event: int, final: float) -> float:
        """The cumulative fraction removed after event ``event`` (0-based) of a schedule ending at ``final``."""
        raise NotImplementedError


@dataclass(frozen=True)
class OneShot(Schedule):
    """Everything at ``start_epoch`` (default: half of max_epochs)."""

    name: ClassVar[str] = "oneshot"
    start_epoch: Optional[int] = None

    def events(self, max_epochs: Optional[int]) -> list[int]:
        return [event_epoch(self.start_epoch, max_epochs, "--prune.start_epoch")]

    def target(self, event: int, final: float) -> float:
        return final


@dataclass(frozen=True)
class Iterative(Schedule):
    """``rounds`` events ``every_n_epochs`` apart, each removing the same share of what is left."""

    name: ClassVar[str] = "iterative"
    start_epoch: Optional[int] = None
    every_n_epochs: int = 1
    rounds: int = 3

    def events(self, max_epochs: Optional[int]) -> list[int]:
        start = event_epoch(self.start_epoch, max_epochs, "--prune.start_epoch")
        return [start + i * self.every_n_epochs for i in range(self.rounds)]

    def target(self, event: int, final: float) -> float:
        return iterative_fraction(event + 1, self.rounds, final)


@dataclass(frozen=True)
class Dynamic(Iterative):
    """``rounds`` equal steps ``every_n_epochs`` apart, each tried and kept only while the
    quality metric stays within the tolerance; the first refused step ends the schedule."""

    name: ClassVar[str] = "dynamic"
    verified: ClassVar[bool] = True

    def target(self, event: int, final: float) -> float:
        return final * (event + 1) / self.rounds


@dataclass(frozen=True)
class Gradual(Schedule):
    """Zhu & Gupta's polynomial ramp: an event every ``frequency`` batches from ``start_step``
    to ``end_step`` (the last event falls on ``end_step`` itself)."""

    name: ClassVar[str] = "gradual"
    unit: ClassVar[Unit] = "batch"
    start_step: int = 0
    end_step: Optional[int] = None
    frequency: int = 10

    def __post_init__(self) -> None:
        if self.end_step is None or self.end_step <= self.start_step or self.start_step < 0:
            raise ConfigError(f"--prune.schedule gradual needs 0 <= --prune.start_step < --prune.end_step, got {self.start_step} and {self.end_step}")

    def events(self, max_epochs: Optional[int] = None) -> list[int]:
        return [*range(self.start_step + self.frequency, self.end_step, self.frequency), self.end_step]

    def target(self, event: int, final: float) -> float:
        return polynomial_sparsity(self.events()[event], self.start_step, self.end_step, final)


SCHEDULES: dict[str, type[Schedule]] = {cls.name: cls for cls in (OneShot, Iterative, Gradual, Dynamic)}


def make_schedule(name: str, **options: Any) -> Schedule:
    """The schedule ``name``, built from the options it takes (the others are ignored, so a
    callback can pass all of its schedule options)."""
    if name not in SCHEDULES:
        raise ConfigError(f"--prune.schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    cls = SCHEDULES[name]
    return cls(**{f.name: options[f.name] for f in dataclasses.fields(cls) if f.name in options})
