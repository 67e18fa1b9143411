"""What structured pruning cuts: groups of units that are removed together.

A group is read from a network's data flow by :mod:`gan_lightning.compress.dependency` and
cut by :mod:`gan_lightning.compress.surgery`; it names each layer's share of the units, so
the cut needs no knowledge of how the channels came to be coupled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Member:
    """One layer's share of a group: ``size`` consecutive features per unit, from ``offset``
    (> 0 only where the group's channels follow others in a concatenation)."""

    layer: str
    offset: int
    size: int


@dataclass
class ChannelGroup:
    """Units cut together: removing unit ``i`` slices every producer's output rows, every
    normalization's features and every consumer's input columns that belong to it."""

    units: int
    producers: list[Member]
    consumers: list[Member]
    norm_members: list[Member] = field(default_factory=list)
    scale_norm: Optional[str] = None  # the normalization every consumer reads the units through

    @property
    def producer(self) -> str:
        """The group's name: its first producer in execution order (what edits and masks key on)."""
        return self.producers[0].layer

    @property
    def unit_size(self) -> int:
        return self.producers[0].size

    @property
    def consumer(self) -> str:
        return self.consumers[0].layer

    @property
    def consumer_unit_size(self) -> int:
        return self.consumers[0].size

    @property
    def norms(self) -> list[str]:
        return [m.layer for m in self.norm_members]


@dataclass
class NetworkGraph:
    """The weighted layers in execution order, the groups, and the layer that reads the network
    input (whose input features are a generator's latent dimensions)."""

    layers: list[str]
    groups: list[ChannelGroup]
    input_layer: str
    input_features: int
