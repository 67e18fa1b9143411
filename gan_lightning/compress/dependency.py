"""Which channels of a network must be cut together, read from its data flow (torch.fx).

A network is traced symbolically with :mod:`torch.fx` and run once on an example (eval mode,
no gradients) to learn every tensor's shape. Each tensor's channel dimension (dim 1) is
described as a list of *segments*, each a run of channels belonging to one *space*: the
output channels of one Linear or (transposed) convolution. Walking the graph in order:

- a weighted layer reads the segments of its input (their *consumer*) and starts a new space
  (its *producer*); a normalization, activation, re-sampling or pooling keeps the segments;
- an addition, subtraction or product of two tensors *joins* their spaces: a residual
  shortcut makes a block's output channels one space with its input channels;
- a concatenation along the channels puts the segments one after the other;
- a flatten of a feature map into a Linear (the DCGAN discriminator's head) makes each channel
  span ``h*w`` features; a reshape of a Linear's features into maps (the DCGAN stem) makes a
  whole feature map one unit, ``h*w`` consecutive Linear outputs;
- the network's input and output channels (the image, the logit) cannot be cut.

Every space left is a :class:`ChannelGroup`: a set of units cut together in all its
producers, normalizations and consumers. torch.fx was chosen over forward hooks because hooks
see only modules, not the additions and concatenations between them; anything the walk does
not know is refused in one sentence that names the operation, never skipped.
"""

from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from gan_lightning.compress.groups import ChannelGroup, Member, NetworkGraph
from gan_lightning.compress.profiling import COUNTED, evaluating
from gan_lightning.errors import ConfigError

WEIGHTED = COUNTED  # the layers whose MACs are counted are the ones pruning acts on
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)
UNSTRUCTURED = "use --prune.granularity unstructured"

# Operations that keep the channel layout of their first input.
_KEEP_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.ReLU6, nn.Softplus,
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.AvgPool1d, nn.AvgPool2d, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
_F = nn.functional
# What each function or tensor method (by name) does to the channels: the walk's method for it.
_HANDLERS: dict[Any, str] = {
    **dict.fromkeys([
        torch.relu, torch.tanh, torch.sigmoid, _F.relu, _F.leaky_relu, _F.elu, _F.gelu, _F.silu, _F.hardtanh, _F.relu6,
        _F.softplus, _F.dropout, _F.interpolate, _F.avg_pool2d, _F.max_pool2d, _F.adaptive_avg_pool2d, _F.adaptive_max_pool2d,
        torch.neg, operator.neg, "relu", "relu_", "tanh", "sigmoid", "contiguous", "clone", "float", "to", "detach", "neg",
    ], "_keep"),
    **dict.fromkeys([
        operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
        torch.add, torch.sub, torch.mul, torch.div, "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_",
    ], "_joined"),
    **dict.fromkeys([torch.flatten, torch.reshape, "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze"], "_reshaped"),
    **dict.fromkeys([torch.sum, torch.mean, torch.amax, "sum", "mean", "amax"], "_reduced"),
    torch.cat: "_concatenated",
}
_NOT_TENSORS = {getattr, operator.getitem}  # x.shape[0] and the like


class _Space:
    """Channels that must be cut together (a union-find node)."""

    def __init__(self, units: int, order: int) -> None:
        self.units, self.order, self.fixed = units, order, False
        self.parent: _Space = self
        self.producers: list[tuple[str, int, int]] = []  # (layer, offset, features)
        self.consumers: list[tuple[str, int, int, Optional[str]]] = []  # (..., normalization read through)
        self.norms: list[tuple[str, int, int]] = []

    def root(self) -> "_Space":
        while self.parent is not self:
            self.parent = self.parent.parent
            self = self.parent
        return self


@dataclass(frozen=True)
class _Segment:
    space: _Space
    count: int  # features of this tensor's dim 1 that belong to the space
    normalized_by: Optional[str] = None


def _join(a: _Space, b: _Space) -> _Space:
    a, b = a.root(), b.root()
    if a is b:
        return a
    if b.order < a.order:
        a, b = b, a
    b.parent = a
    a.units = math.gcd(a.units, b.units)
    a.fixed = a.fixed or b.fixed
    a.producers, a.consumers, a.norms = a.producers + b.producers, a.consumers + b.consumers, a.norms + b.norms
    return a


def features(module: nn.Module, which: str) -> int:
    """A layer's input (``which="in"``) or output channels or features; a norm's features."""
    if isinstance(module, nn.Linear):
        return module.out_features if which == "out" else module.in_features
    if isinstance(module, NORMS):
        return module.num_channels if isinstance(module, nn.GroupNorm) else module.num_features
    return module.out_channels if which == "out" else module.in_channels


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # a spectral-norm parametrized convolution is a leaf like the plain one
        return isinstance(m, WEIGHTED + NORMS) or super().is_leaf_module(m, qualname)


def check_layers(network: nn.Module) -> None:
    """Refuse, in one sentence, a layer with parameters that structured pruning cannot shrink."""
    for name, m in network.named_modules():
        if ".parametrizations" in f".{name}" or isinstance(m, nn.utils.parametrize.ParametrizationList):
            continue
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups != 1:
            raise ConfigError(f"structured pruning cannot handle grouped convolution {name!r}; {UNSTRUCTURED}")
        if isinstance(m, NORMS) and isinstance(m, nn.GroupNorm) and m.num_groups not in (1, m.num_channels):
            raise ConfigError(f"structured pruning cannot shrink {name!r}: GroupNorm with {m.num_groups} groups of several channels")
        if not isinstance(m, WEIGHTED + NORMS) and not list(m.children()) and list(m.parameters(recurse=False)):
            raise ConfigError(
                f"structured pruning cannot handle layer {name!r} of type {type(m).__name__} in {type(network).__name__};"
                f" supported: Linear, Conv, ConvTranspose, BatchNorm, GroupNorm ({UNSTRUCTURED})"
            )


def _graph_module(network: nn.Module) -> torch.fx.GraphModule:
    params = list(inspect.signature(network.forward).parameters.values())[1:]
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    try:
        graph = _Tracer().trace(network, concrete_args=concrete or None)
    except Exception as err:  # noqa: BLE001 - any tracing failure is the same refusal
        raise ConfigError(
            f"structured pruning traces {type(network).__name__} with torch.fx, which cannot follow its forward"
            f" ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); {UNSTRUCTURED}"
        ) from err
    return torch.fx.GraphModule(network, graph)


def _shape(node: Any) -> Optional[torch.Size]:
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return getattr(meta, "shape", None)


def _op_name(node: torch.fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))


@torch.no_grad()
def trace(network: nn.Module, example: torch.Tensor) -> NetworkGraph:
    """The channel groups of ``network`` on input ``example``, or one sentence saying which
    layer or operation stops structured pruning."""
    check_layers(network)
    gm = _graph_module(network)
    with evaluating(gm):
        ShapeProp(gm).propagate(example)
    walk = _Walk(network, dict(network.named_modules()))
    for node in gm.graph.nodes:
        walk.visit(node)
    if not walk.weighted:
        raise ConfigError(f"{type(network).__name__} has no Linear or convolution layer to prune")
    return walk.graph()


class _Walk:
    def __init__(self, network: nn.Module, modules: dict[str, nn.Module]) -> None:
        self.network, self.modules = network, modules
        self.layouts: dict[torch.fx.Node, Optional[list[_Segment]]] = {}
        self.weighted: list[str] = []
        self.spaces: list[_Space] = []

    def _space(self, units: int) -> _Space:
        space = _Space(units, len(self.spaces))
        self.spaces.append(space)
        return space

    def _refuse(self, node: torch.fx.Node, why: str) -> None:
        raise ConfigError(f"structured pruning cannot follow {why} at {node.name!r} ({_op_name(node)}) in {type(self.network).__name__}; {UNSTRUCTURED}")

    def _input(self, node: torch.fx.Node) -> Optional[list[_Segment]]:
        arg = node.args[0] if node.args else next(iter(node.kwargs.values()))
        return self.layouts.get(arg) if isinstance(arg, torch.fx.Node) else None

    def _fix(self, layout: Optional[list[_Segment]]) -> None:
        for seg in layout or []:
            seg.space.root().fixed = True

    def visit(self, node: torch.fx.Node) -> None:
        shape = _shape(node)
        if node.op == "placeholder":
            if shape is not None and len(shape) >= 2:
                space = self._space(shape[1])
                space.fixed = True
                self.layouts[node] = [_Segment(space, shape[1])]
            return
        if node.op == "output":
            for arg in _flat_nodes(node.args):
                self._fix(self.layouts.get(arg))
            return
        if shape is None or node.op == "get_attr":
            return  # not a tensor with channels (a shape, a constant)
        layout = self._input(node)
        handler = _HANDLERS.get(node.target) if node.op != "call_module" else None
        if node.op == "call_module":
            self.layouts[node] = self._module(node, self.modules[node.target], layout)
        elif handler is not None:
            self.layouts[node] = getattr(self, handler)(node, layout)
        elif not (node.target in _NOT_TENSORS and layout is None):
            self._refuse(node, "this operation")

    def _keep(self, node: torch.fx.Node, layout: Optional[list[_Segment]]) -> Optional[list[_Segment]]:
        before, after = _shape(node.args[0]) if node.args else None, _shape(node)
        if layout is not None and (before is None or len(after) < 2 or after[1] != before[1]):
            self._refuse(node, "a change of the channel count")
        return layout

    def _module(self, node: torch.fx.Node, m: nn.Module, layout: Optional[list[_Segment]]) -> Optional[list[_Segment]]:
        if isinstance(m, WEIGHTED):
            if node.target in self.weighted:
                raise ConfigError(f"structured pruning needs each layer of {type(self.network).__name__} to run once per forward pass")
            if isinstance(m, nn.Linear) and len(_shape(node.args[0]) or ()) != 2:
                self._refuse(node, f"Linear {node.target!r} over more than one dimension")
            self.weighted.append(node.target)
            offset = 0
            for seg in layout or []:
                seg.space.root().consumers.append((node.target, offset, seg.count, seg.normalized_by))
                offset += seg.count
            if layout is None or offset != features(m, "in"):
                self._refuse(node, f"the input of layer {node.target!r}")
            space = self._space(features(m, "out"))
            space.producers.append((node.target, 0, space.units))
            return [_Segment(space, space.units)]
        if isinstance(m, NORMS):
            offset = 0
            for seg in layout or []:
                seg.space.root().norms.append((node.target, offset, seg.count))
                offset += seg.count
            return [_Segment(s.space, s.count, node.target) for s in layout or []]
        if isinstance(m, nn.Flatten):
            return self._reshaped(node, layout)
        if isinstance(m, _KEEP_MODULES):
            return self._keep(node, layout)
        self._refuse(node, f"layer {node.target!r} of type {type(m).__name__}")
        return None

    def _joined(self, node: torch.fx.Node, _layout: Optional[list[_Segment]]) -> Optional[list[_Segment]]:
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node) and _shape(a) is not None]
        layouts = [self.layouts.get(a) for a in tensors]
        known = [lay for lay in layouts if lay is not None]
        if len(known) < len(tensors):  # a constant tensor: fine only if it is one number
            if any(_shape(a).numel() > 1 for a, lay in zip(tensors, layouts) if lay is None):
                self._refuse(node, "an operation with a constant tensor")
        if len(known) <= 1:
            return known[0] if known else None
        first, second = known
        if [s.count for s in first] != [s.count for s in second]:
            for wide, narrow in ((first, second), (second, first)):
                if sum(s.count for s in narrow) == 1:  # one map broadcast over every channel (a spatial gate)
                    self._fix(narrow)
                    return wide
            self._refuse(node, "channels joined from differently arranged tensors")
        out = []
        for a, b in zip(first, second):
            out.append(_Segment(_join(a.space, b.space), a.count, a.normalized_by if a.normalized_by == b.normalized_by else None))
        return out

    def _reshaped(self, node: torch.fx.Node, layout: Optional[list[_Segment]]) -> Optional[list[_Segment]]:
        before, after = _shape(node.args[0]), _shape(node)
        if layout is None:
            return None
        if len(after) < 2 or after[0] != before[0]:  # channels folded into the batch or a scalar: keep them all
            self._fix(layout)
            return None
        if after[1] == before[1]:
            return layout
        if len(before) >= 3 and len(after) == 2 and after[1] == before[1:].numel():  # flatten
            return [_Segment(s.space, s.count * before[2:].numel(), s.normalized_by) for s in layout]
        per_channel = after[2:].numel()
        if len(before) == 2 and len(after) >= 3 and all(s.count % per_channel == 0 for s in layout):  # features -> maps
            out = []
            for s in layout:
                root = s.space.root()
                root.units = math.gcd(root.units, s.count // per_channel)
                out.append(_Segment(root, s.count // per_channel, s.normalized_by))
            return out
        self._refuse(node, f"a reshape from {tuple(before)} to {tuple(after)}")
        return None

    def _reduced(self, node: torch.fx.Node, layout: Optional[list[_Segment]]) -> Optional[list[_Segment]]:
        before, after = _shape(node.args[0]), _shape(node)
        if layout is not None and len(after) >= 2 and after[0] == before[0] and after[1] == before[1]:
            return layout  # a reduction over positions keeps the channels
        self._fix(layout)
        return None

    def _concatenated(self, node: torch.fx.Node, _layout: Optional[list[_Segment]]) -> Optional[list[_Segment]]:
        parts = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        rank = len(_shape(node))
        layouts = [self.layouts.get(p) for p in parts]
        if any(lay is None for lay in layouts):
            self._refuse(node, "a concatenation with a constant tensor")
        if dim % rank == 1:
            return [s for lay in layouts for s in lay]
        out = layouts[0]
        for lay in layouts[1:]:
            if [s.count for s in lay] != [s.count for s in out]:
                self._refuse(node, "a concatenation of differently arranged channels")
            out = [_Segment(_join(a.space, b.space), a.count) for a, b in zip(out, lay)]
        return out

    def graph(self) -> NetworkGraph:
        groups = []
        for space in sorted({s.root() for s in self.spaces}, key=lambda s: s.order):
            if space.fixed or not space.producers or not space.consumers:
                continue
            groups.append(self._group(space))
        first = self.modules[self.weighted[0]]
        return NetworkGraph(list(self.weighted), groups, self.weighted[0], features(first, "in"))

    def _member(self, space: _Space, layer: str, offset: int, count: int) -> Member:
        if count % space.units:
            raise ConfigError(f"structured pruning cannot match {layer!r} ({count} features) to {space.units} units")
        return Member(layer, offset, count // space.units)

    def _group(self, space: _Space) -> ChannelGroup:
        order = {name: i for i, name in enumerate(self.weighted)}
        producers = sorted((self._member(space, *p) for p in space.producers), key=lambda m: order[m.layer])
        consumers = [self._member(space, *c[:3]) for c in space.consumers]
        norms = [self._member(space, *n) for n in space.norms]
        read_through = {c[3] for c in space.consumers}
        scale = next(iter(read_through)) if len(read_through) == 1 else None
        return ChannelGroup(space.units, producers, consumers, norms, scale)


def _flat_nodes(args: Any) -> list[torch.fx.Node]:
    out: list[torch.fx.Node] = []
    torch.fx.node.map_arg(args, lambda n: out.append(n) or n)
    return out
