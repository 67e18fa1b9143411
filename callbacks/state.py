"""The state contract of the project's stateful callbacks: what ``--ckpt_path`` resumes."""

from __future__ import annotations

import copy
from typing import Any, Callable, ClassVar

from gan_lightning.errors import CheckpointError


class StateContract:
    """``STATE`` names every key of the callback's state_dict with a factory of its value for a
    fresh run, which is also the value for a checkpoint written before the key existed. A key
    this code does not know is refused rather than set as a stray attribute."""

    option_group: str  # the callback's registered name, for the message
    STATE: ClassVar[dict[str, Callable[[], Any]]] = {}

    def reset_state(self) -> None:
        for key, default in self.STATE.items():
            setattr(self, key, default())

    def state_dict(self) -> dict[str, Any]:
        # a value with to_state (e.g. Masks) is saved as plain data: checkpoints load weights-only
        return {key: _plain(getattr(self, key)) for key in self.STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = sorted(set(state) - set(self.STATE))
        if unknown:
            raise CheckpointError(
                f"the checkpoint's {self.option_group} callback state has key(s) {', '.join(unknown)} that this version does not"
                " know: resume it with the gan-lightning version that wrote it"
            )
        for key, default in self.STATE.items():
            if key not in state:
                setattr(self, key, default())
                continue
            value, from_state = copy.deepcopy(state[key]), getattr(default, "from_state", None)
            setattr(self, key, from_state(value) if from_state is not None else value)


def _plain(value: Any) -> Any:
    return value.to_state() if hasattr(value, "to_state") else value


class OptionalState:
    """A ``STATE`` factory for a value of class ``cls`` that a fresh run does not have yet
    (None), saved through ``cls.to_state`` and read back through ``cls.from_state``."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __call__(self) -> None:
        return None

    def from_state(self, state: Any) -> Any:
        return None if state is None else self.cls.from_state(state)
