"""The one record of a module's structural edits: per network, an ordered list of edits.

Three kinds of edit change a network's shapes: a :class:`Cut` (structured pruning removed units
of layers, and latent inputs), a :class:`Factorize` (low-rank: a layer became two factors) and a
:class:`Replace` (a new network, a distillation student, took the old one's place). Order
matters: a cut made after a factorization names a factor (``stem.0.0``), one made before it the
original layer (``stem.0``); the list says which came first, and :meth:`EditRecord.replay`
repeats it in that order on a freshly built network (shapes only: a state_dict then fills the
weights), as Torch-Pruning's ``pruning_history()`` / ``load_pruning_history()`` keep and replay
its pruning as data. Replaying a network already in those shapes changes nothing.

The compression functions return the edit they made; the GAN hook ``architecture_changed``
appends it to ``GANModule.edits`` and announces it. The module's checkpoints, the distillation
teacher and the export all keep this record (:meth:`EditRecord.to_state`: plain dicts, lists,
ints and strings with a version, read back under ``torch.load(weights_only=True)``).
:meth:`EditRecord.from_checkpoint` also reads the three records written before it existed
(``structure``, ``lowrank``, ``replaced``). What follows from the edits (the generator's latent
size after a latent cut, the units each layer kept, whether a network was compressed) is asked
of the record, never stored beside it. A new kind of edit is a new dataclass with a ``kind`` tag
registered in :data:`KINDS`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from gan_lightning.compress.lowrank import apply_ranks
from gan_lightning.compress.surgery import INPUT_KEY, apply_cut, compose_keep
from gan_lightning.errors import CheckpointError
from gan_lightning.specs import build_generator

VERSION = 1
KINDS: dict[str, type["Edit"]] = {}  # kind tag -> edit class, for from_state


def kind(tag: str):
    """Register an edit class under its ``kind`` tag (what ``to_state`` writes)."""

    def register(cls):
        cls.kind = tag
        KINDS[tag] = cls
        return cls

    return register


class Edit:
    """One structural edit of a network, as data."""

    kind: ClassVar[str]

    def apply(self, network: nn.Module, example: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        """Make the edit's shapes in ``network`` (weights left for a state_dict), unless already
        made; returns the network (a new one for a replacement) and an input of it."""
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @staticmethod
    def from_state(state: dict[str, Any]) -> "Edit":
        cls = KINDS.get(state.get("kind")) if isinstance(state, dict) else None
        if cls is None:
            raise CheckpointError(f"the record of structural edits holds an edit of kind {state.get('kind') if isinstance(state, dict) else state!r}"
                                  f" that this version does not know ({', '.join(KINDS)}): load it with the gan-lightning version that wrote it")
        names = {f.name for f in fields(cls)}
        return cls(**{k: copy.deepcopy(v) for k, v in state.items() if k in names})


@kind("cut")
@dataclass(frozen=True)
class Cut(Edit):
    """Units kept by structured pruning: producer layer -> kept positions among the units the
    layer had when cut; ``inputs``: the kept input features (a generator's latent dimensions)."""

    units: dict[str, list[int]] = field(default_factory=dict)
    inputs: Optional[list[int]] = None

    def apply(self, network: nn.Module, example: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        apply_cut(network, example, self.units, self.inputs)
        return network, example if self.inputs is None else example[:, : len(self.inputs)]


@kind("factorize")
@dataclass(frozen=True)
class Factorize(Edit):
    """Layers replaced by their low-rank factors: layer -> rank (see :mod:`gan_lightning.compress.lowrank`)."""

    ranks: dict[str, int] = field(default_factory=dict)

    def apply(self, network: nn.Module, example: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        apply_ranks(network, self.ranks, weights=False)
        return network, example


@kind("replace")
@dataclass(frozen=True)
class Replace(Edit):
    """A new network in place of the old one: ``spec`` (class path and init args) builds it;
    ``replaces`` is the spec of the one it replaced (what its costs are compared with), None when
    that one was built in Python. It takes the same input as the network it replaces."""

    spec: dict[str, Any] = field(default_factory=dict)
    replaces: Optional[dict[str, Any]] = None

    def apply(self, network: nn.Module, example: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        return on_place_of(build_generator(self.spec, source="the recorded replacement"), network), example


def on_place_of(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` on the device and in the dtype of ``old`` (a bf16-true run converted the old one at setup)."""
    p = next(old.parameters(), None)
    return new if p is None else new.to(device=p.device, dtype=p.dtype)


def install_network(module, network: str, new: nn.Module) -> None:
    """Put ``new`` in place of ``module.<network>`` (and of a GAN generator's EMA copy)."""
    setattr(module, network, on_place_of(new, getattr(module, network)))
    if network == "generator" and getattr(module, "generator_ema", None) is not None:
        module.generator_ema = copy.deepcopy(module.generator).requires_grad_(False)


def replace_network(module, network: str, new: nn.Module, spec: dict[str, Any], replaces: Optional[dict[str, Any]]) -> Replace:
    """Put ``new`` (built from ``spec``) in place of ``module.<network>``; returns the edit, for
    the caller to record and announce."""
    install_network(module, network, new)
    return Replace({"class_path": spec["class_path"], "init_args": dict(spec.get("init_args") or {})}, replaces)


class EditRecord:
    """Per network (``generator``, ``discriminator``, or the attribute named on another module),
    the ordered list of its edits."""

    def __init__(self, networks: Optional[dict[str, list[Edit]]] = None) -> None:
        self.networks: dict[str, list[Edit]] = {k: list(v) for k, v in (networks or {}).items() if v}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EditRecord) and self.networks == other.networks

    def __repr__(self) -> str:
        return f"EditRecord({self.networks!r})"

    def __bool__(self) -> bool:
        return bool(self.networks)

    def edits(self, network: str) -> list[Edit]:
        return list(self.networks.get(network, ()))

    def append(self, network: str, edit: Edit) -> None:
        self.networks.setdefault(network, []).append(edit)

    def only(self, *networks: str) -> "EditRecord":
        """The record of the named networks alone (a teacher's, an export's: the generator's)."""
        return EditRecord({n: self.edits(n) for n in networks})

    def copy(self) -> "EditRecord":
        return EditRecord(self.networks)

    # ------------------------------------------------------------------ replay
    def replay(self, network: str, net: nn.Module, example: torch.Tensor, start: int = 0) -> nn.Module:
        """``net`` (built as configured, or already rebuilt) in the shapes ``network``'s edits from
        position ``start`` on give it; ``example`` is an input of ``net`` as it is now. A new
        network when a replacement is among them: edits before the last one were the replaced network's."""
        todo = self.edits(network)[start:]
        last = max((i for i, e in enumerate(todo) if isinstance(e, Replace)), default=0)
        for edit in todo[last:]:
            net, example = edit.apply(net, example)
        return net

    # ------------------------------------------------------------------ queries
    def current(self, network: str) -> list[Edit]:
        """The edits of the network as it is now: those after its last replacement."""
        edits = self.edits(network)
        last = max((i for i, e in enumerate(edits) if isinstance(e, Replace)), default=-1)
        return edits[last + 1 :]

    def replacement(self, network: str) -> Optional[Replace]:
        """The last network put in place of the configured one, or None."""
        return next((e for e in reversed(self.edits(network)) if isinstance(e, Replace)), None)

    def spec(self, network: str, configured: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        """The class path and init args the network as it is now is built from."""
        replacement = self.replacement(network)
        return replacement.spec if replacement is not None else configured

    def kept(self, network: str) -> dict[str, list[int]]:
        """Per layer cut since the last replacement, the units it keeps among those it had when
        first cut (its original units, or a factor's rank), and ``"<input>"``: the kept inputs."""
        kept: dict[str, list[int]] = {}
        for edit in self.current(network):
            if isinstance(edit, Cut):
                for layer, idx in [*edit.units.items(), *([(INPUT_KEY, edit.inputs)] if edit.inputs is not None else [])]:
                    kept[layer] = compose_keep(kept.get(layer), torch.tensor(idx, dtype=torch.long))
        return kept

    def ranks(self, network: str) -> dict[str, int]:
        """The factorized layers since the last replacement, and their ranks."""
        return {k: v for e in self.current(network) if isinstance(e, Factorize) for k, v in e.ranks.items()}

    def latent_size(self, network: str, built: int) -> int:
        """The number of inputs the network takes: what a latent cut left, else ``built``."""
        inputs = self.kept(network).get(INPUT_KEY)
        return built if inputs is None else len(inputs)

    def compressed(self, network: str) -> bool:
        """Whether the network as it is now was cut or factorized."""
        return bool(self.current(network))

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        return {"version": VERSION, "networks": {n: [e.to_state() for e in edits] for n, edits in self.networks.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str = "the checkpoint") -> "EditRecord":
        version = state.get("version") if isinstance(state, dict) else None
        if not isinstance(version, int) or version > VERSION:
            raise CheckpointError(f"{source} holds a record of structural edits of version {version!r}; this code reads up to version {VERSION}:"
                                  " load it with the gan-lightning version that wrote it")
        return cls({n: [Edit.from_state(e) for e in edits] for n, edits in state.get("networks", {}).items()})

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], source: str = "the checkpoint") -> "EditRecord":
        """A checkpoint's record: ``checkpoint["edits"]``, or the three records written before it."""
        if "edits" in checkpoint:
            return cls.from_state(checkpoint["edits"], source)
        structure, ranks, replaced = checkpoint.get("structure", {}), checkpoint.get("lowrank", {}), checkpoint.get("replaced", {})
        names = {*structure, *replaced, *(key.split(".", 1)[0] for key in ranks)}
        own_ranks = {name: {k.split(".", 1)[1]: r for k, r in ranks.items() if k.split(".", 1)[0] == name} for name in names}
        return cls({name: old_edits(structure.get(name, {}), own_ranks[name], replaced.get(name)) for name in sorted(names)})


def old_edits(structure: dict[str, list[int]], ranks: dict[str, int], replaced: Optional[dict[str, Any]] = None) -> list[Edit]:
    """One network's edits from the records written before this one: ``structure`` (layer ->
    kept units, in the layer's units when first cut), ``ranks`` (layer -> rank) and
    ``replaced`` (the spec of a replacement, with the spec it ``replaces``). Those records
    were replayed as: the replacement, the cuts of layers that exist before factorization, the
    factorization, then the cuts of the factors; that order becomes the list's."""
    edits: list[Edit] = []
    if replaced:
        edits.append(Replace({"class_path": replaced["class_path"], "init_args": dict(replaced.get("init_args") or {})}, replaced.get("replaces")))

    def factor(layer: str) -> bool:
        return any(layer.startswith(f"{name}.") for name in ranks)

    def cut(layers: list[str]) -> Optional[Cut]:
        units = {k: [int(i) for i in structure[k]] for k in layers if k != INPUT_KEY}
        inputs = structure.get(INPUT_KEY) if INPUT_KEY in layers else None
        return Cut(units, None if inputs is None else [int(i) for i in inputs]) if units or inputs is not None else None

    edits.append(cut([k for k in structure if not factor(k)]))
    edits.append(Factorize({k: int(r) for k, r in ranks.items()}) if ranks else None)
    edits.append(cut([k for k in structure if factor(k)]))
    return [e for e in edits if e is not None]
