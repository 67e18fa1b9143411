"""What one compression event did, measured the same way by every compression callback.

A callback calls :func:`before_event` just before it changes the networks and
:func:`report_event` just after. The report holds, for the generator and discriminator (on any
other LightningModule: the networks the callback compresses), parameters, non-zero parameters
and per-sample MACs, the first network's latency before and after (same process, same batch,
interleaved medians), and a quality metric before and after. It is logged as ``compress/*``
scalars, a ``compress/layers`` table (sparsity of every layer against the dense network) and a
cumulative ``compress/events`` table.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Literal, Optional

import torch
from pytorch_lightning import Trainer
from typing_extensions import override

from callbacks.fidelity import FidelityEvaluation
from callbacks.state import StateContract
from callbacks.target import target_of
from gan_lightning.compress.profiling import interleaved_latency_ms, network_cost
from gan_lightning.compress.pruning import example_input
from gan_lightning.compress.surgery import layer_of
from gan_lightning.core.hooks import GANCallback
from gan_lightning.core.lightning_private import logging_step
from gan_lightning.core.loggers import log_table
from gan_lightning.dataset_tensors import stack_samples
from gan_lightning.errors import ConfigError
from gan_lightning.quality.evaluation import evaluate_generator, real_samples
from gan_lightning.quality.swd import sliced_wasserstein

QualityMetric = Literal["auto", "fid", "swd", "none"]
PREFIX = {"generator": "g", "discriminator": "d"}  # compress/g_macs; other networks go by their attribute name
LAYER_COLUMNS = ["event", "network", "layer", "weight_shape", "dense_weights", "weights", "nonzero", "sparsity", "macs"]


@dataclass
class EventRow:
    """One row of the ``compress/events`` table; the table's columns are these fields, in order.
    Callbacks keep rows as plain lists (``as_row``) in their state, so checkpoints hold no class."""

    event: str
    epoch: int
    step: int
    g_sparsity: Optional[float] = None
    d_sparsity: Optional[float] = None
    g_params: Optional[int] = None
    g_macs: Optional[int] = None
    d_params: Optional[int] = None
    d_macs: Optional[int] = None
    latency_ms_before: Optional[float] = None
    latency_ms_after: Optional[float] = None
    speedup: Optional[float] = None
    metric: Optional[str] = None
    metric_before: Optional[float] = None
    metric_after: Optional[float] = None

    def as_row(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]


EVENT_COLUMNS = [f.name for f in fields(EventRow)]


class CompressionCallback(StateContract, GANCallback):
    """What every compression callback shares: its ``check_setup(trainer, module, datamodule)``
    runs before training (the CLI calls it before any run folder exists, ``setup`` again for
    Python users), the quality metric is resolved once, and the dense reference is taken at the
    very first fit only (a resumed run keeps the saved one, in the subclass's state_dict)."""

    option_group: str  # the callback's registered name, for messages such as --prune.metric
    metric: QualityMetric = "auto"
    dense: dict[str, int]
    STATE: ClassVar[dict[str, Callable[[], Any]]] = {"dense": dict, "history": list}  # see StateContract
    # Shown when another compression callback needs this one's events to come first (see lowrank).
    conflict_hint: ClassVar[str] = ""
    event_noun: ClassVar[str] = "compression event"

    @property
    def scoped(self) -> list[str]:
        """The networks this callback changes."""
        raise NotImplementedError

    def reported(self, module) -> list[str]:
        """The networks every event report covers, the first one's latency measured: a GAN's
        generator and discriminator whatever was compressed, else the networks in scope."""
        return target_of(module).reported(self.scoped)

    def last_event_epoch(self, max_epochs: Optional[int]) -> Optional[int]:
        """The epoch of this callback's last change to the networks' layers; None when its
        events are not placed in epochs."""
        raise NotImplementedError

    def keeps_layer_state(self) -> bool:
        """Whether state named after layers (e.g. masks) lives on after the events."""
        return False

    def check_setup(self, trainer: Trainer, module, datamodule) -> None:
        """Refuse settings that cannot work with this model and trainer (subclasses extend this)."""
        resolve_metric(trainer, module, self.metric, self.option_group)

    @override
    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        self.check_setup(trainer, pl_module, trainer.datamodule)
        self.metric_name, self.fidelity = resolve_metric(trainer, pl_module, self.metric, self.option_group)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module) -> None:
        if not self.dense:
            self.dense = dense_weight_counts(pl_module, self.reported(pl_module))
            self.on_dense_reference(pl_module)

    def before_event(self, trainer: Trainer, module) -> Before:
        return before_event(trainer, module, self.reported(module)[0], self.metric_name, self.fidelity)

    def on_dense_reference(self, module) -> None:
        """Called once, when the dense reference is taken: record other dense-network facts."""


def forget_best_checkpoints(trainer: Trainer) -> list[str]:
    """Make every monitoring ModelCheckpoint forget its best models (their files stay on disk),
    through its own ``load_state_dict`` given a memory of nothing, and return the paths it held
    as best."""
    forgotten = []
    for cb in trainer.checkpoint_callbacks:
        if not getattr(cb, "monitor", None):
            continue
        if cb.best_model_path:
            forgotten.append(cb.best_model_path)
        worst = torch.tensor(torch.inf if cb.mode == "min" else -torch.inf)
        cb.load_state_dict({
            "dirpath": cb.dirpath, "best_model_score": None, "best_model_path": "", "kth_best_model_path": "",
            "kth_value": worst, "best_k_models": {}, "last_model_path": cb.last_model_path,
        })
    return forgotten


def dense_weight_counts(module, networks: list[str]) -> dict[str, int]:
    """Weight elements per layer of the untouched networks, the reference every sparsity is measured against."""
    return {
        f"{net}.{name}": p.numel() for net in networks for name, p in getattr(module, net).named_parameters()
        if (name.endswith("weight") or layer_of(name) != name) and p.dim() > 1  # spectral-norm parametrized or not
    }


def summary_key(network: str, quantity: str) -> str:
    """``compress/g_macs`` for a GAN's generator, ``compress/<attribute>_macs`` for other networks."""
    return f"compress/{PREFIX.get(network, network)}_{quantity}"


def quality_change(summary: dict[str, float], metric: str) -> str:
    """``, fid 37.1 -> 50.9`` for an event's log line; nothing when no metric is measured."""
    if metric == "none":
        return ""
    return f", {metric} {summary[f'compress/{metric}_before']:.4g} -> {summary[f'compress/{metric}_after']:.4g}"


def resolve_metric(trainer: Trainer, module, metric: QualityMetric, option_group: str) -> tuple[str, Optional[FidelityEvaluation]]:
    """``auto`` is FID when the run measures FID (``--metrics.features`` not none), else SWD;
    both measure a GAN's samples, so on any other LightningModule ``auto`` is none."""
    if not target_of(module).adversarial:
        if metric in ("fid", "swd"):
            raise ConfigError(f"--{option_group}.metric {metric} measures a GAN's samples: on {type(module).__name__} use auto or none")
        return "none", None
    fidelity = next((cb for cb in trainer.callbacks if isinstance(cb, FidelityEvaluation)), None)
    usable = fidelity is not None and fidelity.every_n_epochs > 0 and fidelity.features != "none"
    if metric == "fid" and not usable:
        raise ConfigError(
            f"--{option_group}.metric fid needs the run to measure FID (--metrics.every_n_epochs >= 1 and --metrics.features"
            f" domain or inception); use --{option_group}.metric auto, swd or none"
        )
    if metric == "auto":
        metric = "fid" if usable else "swd"
    return metric, fidelity if usable else None


def measure_quality(trainer: Trainer, module, metric: str, fidelity: Optional[FidelityEvaluation], num_samples: int = 512) -> float:
    """The quality metric of the sampling generator, computed on rank 0 and broadcast (lower is better)."""
    if metric == "none":
        return float("nan")
    value = float("nan")
    if trainer.is_global_zero:
        data = trainer.datamodule
        if metric == "fid":
            value = evaluate_generator(
                module, data, fidelity.features, fidelity.num_fake, fidelity.num_real, fidelity.seed,
                fidelity.domain_weights, fidelity.inception_weights, fidelity.real_split,
            )["fid"]
        else:
            # val, like the val/swd of every validation, whatever --metrics.real_split says about FID
            real, _ = stack_samples(real_samples(data, "val"), num_samples)
            fake = module.generate(len(real), seed=0).cpu()
            value = float(sliced_wasserstein(real, fake, seed=0))
    return float(trainer.strategy.broadcast(value, src=0))


@dataclass
class Before:
    network: torch.nn.Module  # a copy of the first reported network, for the latency comparison
    z_dim: Optional[int]  # a GAN's latent size before the event (latent pruning may shrink it)
    metric: float


def before_event(trainer: Trainer, module, network: str, metric: str, fidelity: Optional[FidelityEvaluation]) -> Before:
    return Before(copy.deepcopy(getattr(module, network)), getattr(module, "z_dim", None), measure_quality(trainer, module, metric, fidelity))


def report_event(
    trainer: Trainer,
    module,
    event: str,
    before: Before,
    dense: dict[str, int],
    metric: str,
    fidelity: Optional[FidelityEvaluation],
    latency_batch: int,
    history: list[list],
    after_metric: Optional[float] = None,
) -> dict[str, float]:
    """Measure, log and return the state after an event; appends a row to ``history`` (the
    caller's events table, kept in its state so resumed runs log the whole history).
    ``dense`` names the networks reported, the first one's latency measured.
    ``after_metric`` saves a second evaluation when the caller has just measured it."""
    if after_metric is None:
        after_metric = measure_quality(trainer, module, metric, fidelity)
    networks = list(dict.fromkeys(key.split(".", 1)[0] for key in dense))
    latency = interleaved_latency_ms(*_latency_pair(module, networks[0], before, latency_batch))
    costs = {net: network_cost(getattr(module, net), example_input(module, net)) for net in networks}
    rows, removed, total = [], dict.fromkeys(networks, 0), dict.fromkeys(networks, 0)
    for net in networks:
        params = dict(getattr(module, net).named_parameters())
        cost = costs[net]
        for key, n_dense in dense.items():
            if not key.startswith(net + "."):
                continue
            name = key[len(net) + 1 :]
            w = params.get(name)
            nonzero = int(w.count_nonzero()) if w is not None else 0
            removed[net] += n_dense - nonzero
            total[net] += n_dense
            layer = layer_of(name)
            macs = cost.layers[layer].macs if layer in cost.layers else 0
            shape = "x".join(map(str, w.shape)) if w is not None else "removed"
            rows.append([event, net, layer, shape, n_dense, w.numel() if w is not None else 0, nonzero, round(1 - nonzero / n_dense, 4), macs])
    summary = {}
    for i, net in enumerate(networks):  # the first network's sparsity is compress/sparsity
        summary["compress/sparsity" if i == 0 else summary_key(net, "sparsity")] = removed[net] / max(total[net], 1)
        summary.update({summary_key(net, quantity): float(getattr(costs[net], quantity)) for quantity in ("params", "nonzero", "macs")})
    summary.update({
        "compress/latency_ms_before": latency["before"],
        "compress/latency_ms": latency["after"],
        "compress/speedup": latency["before"] / latency["after"],
        f"compress/{metric}_before": before.metric,
        f"compress/{metric}_after": after_metric,
    })
    row = EventRow(
        event=event, epoch=trainer.current_epoch, step=logging_step(trainer), latency_ms_before=round(latency["before"], 4),
        latency_ms_after=round(latency["after"], 4), speedup=round(summary["compress/speedup"], 3), metric=metric,
        metric_before=round(before.metric, 4), metric_after=round(after_metric, 4),
    )
    if target_of(module).adversarial:  # the table's g_*/d_* columns
        g, d = costs["generator"], costs["discriminator"]
        row.g_sparsity, row.d_sparsity = round(summary["compress/sparsity"], 4), round(summary["compress/d_sparsity"], 4)
        row.g_params, row.g_macs, row.d_params, row.d_macs = g.params, g.macs, d.params, d.macs
    history.append(row.as_row())
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(summary, step=logging_step(trainer))
        log_table(trainer, "compress/layers", LAYER_COLUMNS, rows)
        log_table(trainer, "compress/events", EVENT_COLUMNS, history)
    return summary


def _latency_pair(module, network: str, before: Before, batch: int) -> tuple[dict[str, torch.nn.Module], torch.Tensor]:
    """The network before and after the event, and one input of ``batch`` samples for both: a
    GAN generator's latents, or the network's example input repeated."""
    if network == "generator" and target_of(module).adversarial:
        z = torch.randn(batch, before.z_dim, device=module.device)
        return {"before": before.network, "after": _Resized(module.generator, module.z_dim)}, z
    example = example_input(module, network)
    return {"before": before.network, "after": getattr(module, network)}, example[torch.arange(batch) % len(example)]


class _Resized(torch.nn.Module):
    """Feeds a generator whose latent was pruned the leading dimensions of a full-size z, so the
    before/after latency comparison runs on literally the same input tensor."""

    def __init__(self, generator: torch.nn.Module, z_dim: int) -> None:
        super().__init__()
        self.generator, self.z_dim = generator, z_dim

    @override
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z[:, : self.z_dim])
