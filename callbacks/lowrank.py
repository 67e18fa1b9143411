"""lowrank: replace the generator's (or discriminator's) layers by truncated-SVD factors, then fine-tune;
on any other LightningModule, the layers of the networks named by ``networks`` (see ``callbacks/target.py``).

At the start of epoch ``epoch`` every Linear and ungrouped (transposed) convolution of the
chosen network(s) whose MACs would drop is replaced by two thinner layers (see
:mod:`gan_lightning.compress.lowrank` for the layouts and the maths); the rest of training fine-tunes
the factors. The event is reported like a pruning event (``compress/*`` scalars, the
``compress/layers`` and ``compress/events`` tables) plus a ``compress/lowrank_layers`` table
with each layer's full rank, kept rank, kept energy and MACs before/after.

This callback only decides *when* and *which ranks*; the factorization and MAC counting live
in ``gan_lightning.compress`` (lowrank, profiling), the report in ``callbacks/compression.py``.
"""

from __future__ import annotations

from typing import Literal, Optional

from pytorch_lightning import Trainer
from typing_extensions import override

from callbacks.compression import CompressionCallback, QualityMetric, quality_change, report_event, summary_key
from callbacks.registry import register
from callbacks.target import target_of
from gan_lightning.compress.lowrank import PLAN_COLUMNS, LowRank, RankMode, candidate_layers, check_rank_value, factorize_module, plan_ranks
from gan_lightning.compress.profiling import output_layer
from gan_lightning.compress.pruning import example_input
from gan_lightning.compress.schedules import event_epoch
from gan_lightning.compress.surgery import layer_of
from gan_lightning.core.hooks import architecture_changed
from gan_lightning.core.lightning_private import logging_step
from gan_lightning.core.loggers import log_table
from gan_lightning.errors import ConfigError
from gan_lightning.logs import get_logger

log = get_logger(__name__)

SCOPE = {"generator": "the generator", "discriminator": "the discriminator", "both": "the generator or discriminator"}


@register("lowrank")
class LowRankFactorization(CompressionCallback):
    """Factorizes layers by truncated SVD at one epoch and logs what it did (``compress/*``).

    Args:
        network: ``generator``, ``discriminator`` or ``both``; the EMA generator, if any, is
            factorized with the generator (it takes the factorized generator's weights).
        networks: on a LightningModule that is not a GANModule (and only there), the networks
            to factorize, as attribute names, e.g. ``["model"]``; it replaces ``network``.
        rank_mode: how each layer's rank is chosen: ``fixed`` (``rank_value`` itself), ``ratio``
            (``rank_value`` x the layer's full rank, rounded up) or ``energy`` (the smallest
            rank whose singular values keep ``rank_value`` of the sum of their squares).
        rank_value: an integer >= 1 for ``fixed``, a fraction in (0, 1] for ``ratio`` and ``energy``.
        epoch: epoch (counted from 0) at whose start the layers are factorized; the epochs after
            it fine-tune. Default: half of ``--trainer.max_epochs``.
        skip_layers: layers never factorized, as ``generator.<name>``/``discriminator.<name>``
            (``<attribute>.<name>`` with ``networks``); default: each network's output layer.
            Layers whose MACs would not drop at the chosen rank (rank >= m n / (m + n)) are
            always left as they are.
        metric: quality measured before and after the event: ``auto`` (FID when the run
            measures FID, else SWD), ``fid``, ``swd`` or ``none``.
        latency_batch: batch size of the generator latency measurement.
    """

    option_group = "lowrank"
    # what a resumed run needs to neither repeat nor forget the event
    STATE = {"done": bool, "dense": dict, "ranks": dict, "plan_rows": list, "history": list}

    def __init__(
        self,
        network: Literal["generator", "discriminator", "both"] = "generator",
        networks: Optional[list[str]] = None,
        rank_mode: RankMode = "ratio",
        rank_value: float = 0.25,
        epoch: Optional[int] = None,
        skip_layers: Optional[list[str]] = None,
        metric: QualityMetric = "auto",
        latency_batch: int = 64,
    ) -> None:
        if network not in ("generator", "discriminator", "both"):
            raise ConfigError(f"--lowrank.network must be generator, discriminator or both, got {network!r}")
        check_rank_value(rank_mode, rank_value)
        if epoch is not None and epoch < 0:
            raise ConfigError(f"--lowrank.epoch must be an integer >= 0 (epochs count from 0), got {epoch}")
        if latency_batch < 1:
            raise ConfigError(f"--lowrank.latency_batch must be an integer >= 1, got {latency_batch}")
        if networks is not None and not networks:
            raise ConfigError("--lowrank.networks is empty: name at least one network to factorize")
        self.network = network
        self.networks = networks
        self.rank_mode = rank_mode
        self.rank_value = rank_value
        self.epoch = epoch
        self.skip_layers = skip_layers
        self.metric = metric
        self.latency_batch = latency_batch
        self.reset_state()

    @override
    @property
    def scoped(self) -> list[str]:
        if self.networks is not None:
            return list(self.networks)
        return ["generator", "discriminator"] if self.network == "both" else [self.network]

    @property
    def scope_text(self) -> str:
        return ", ".join(self.networks) if self.networks is not None else SCOPE[self.network]

    def event_epoch(self, max_epochs: Optional[int]) -> int:
        return event_epoch(self.epoch, max_epochs, "--lowrank.epoch")

    @override
    def last_event_epoch(self, max_epochs: Optional[int]) -> Optional[int]:
        return self.event_epoch(max_epochs)

    # ------------------------------------------------------------------ checks
    @override
    def check_setup(self, trainer: Trainer, module, datamodule) -> None:
        """Refuse, before training, settings that cannot work with this model and trainer."""
        target_of(module).check_networks(self.networks, "--lowrank.networks", 'LowRankFactorization(networks=["model"])')
        super().check_setup(trainer, module, datamodule)
        candidates = {net: candidate_layers(getattr(module, net), example_input(module, net)) for net in self.reported(module)}
        names = {f"{net}.{n}" for net, layers in candidates.items() for n in layers}
        names |= {f"{net}.{n}" for net in candidates for n, m in getattr(module, net).named_modules() if isinstance(m, LowRank)}
        if self.skip_layers is not None:
            unknown = [n for n in self.skip_layers if n not in names]
            if unknown:
                raise ConfigError(
                    f"--lowrank.skip_layers names unknown layer(s) {', '.join(unknown)}; factorizable layers: {', '.join(sorted(names)) or 'none'}"
                )
        max_epochs = trainer.max_epochs
        epoch = self.event_epoch(max_epochs)
        if max_epochs is not None and max_epochs >= 0 and epoch >= max_epochs:
            raise ConfigError(
                f"--lowrank.epoch {epoch} is never reached because training ends after epoch {max_epochs - 1}"
                f" (--trainer.max_epochs {max_epochs}): set --lowrank.epoch below {max_epochs} or train longer"
            )
        self._check_other_compression(trainer, epoch)
        # a resumed run's model may already be factorized (by its checkpoint) before this
        # callback's own state, which says so, is restored
        already = any(isinstance(m, LowRank) for net in self.scoped for m in getattr(module, net).modules())
        if self.rank_mode != "energy" and not self.done and not already:
            # fixed and ratio ranks depend on shapes only, so a setting that shrinks nothing is known now
            skip = self._skip(module)
            plans = [p for net in self.scoped for p in plan_ranks(getattr(module, net), example_input(module, net), self.rank_mode, self.rank_value, skip.get(net, set()))]
            if plans and not any(p.factorize for p in plans):
                raise ConfigError(
                    f"--lowrank.rank_value {self.rank_value:g} (rank_mode {self.rank_mode}) makes no layer of {self.scope_text}"
                    f" cheaper: a layer needs a rank below m n / (m + n) of its m x n weight matrix, e.g. "
                    + ", ".join(f"{p.layer} ({p.matrix}, rank {p.rank})" for p in plans[:3])
                )

    def _check_other_compression(self, trainer: Trainer, epoch: int) -> None:
        """Another compression callback's masks, scores and unit counts name the layers that
        factorization replaces, so on a shared network all its events must come first and
        leave no per-layer state behind."""
        for cb in trainer.callbacks:
            if cb is self or not isinstance(cb, CompressionCallback) or not set(cb.scoped) & set(self.scoped):
                continue
            last = cb.last_event_epoch(trainer.max_epochs)
            if cb.keeps_layer_state() or last is None or last >= epoch:
                raise ConfigError(
                    f"--callbacks {cb.option_group},lowrank on the same network needs every {cb.event_noun} before"
                    f" --lowrank.epoch {epoch} {cb.conflict_hint}, because its state names the layers that factorization replaces"
                )

    def _skip(self, module) -> dict[str, set[str]]:
        """Layer names (within each network) not to factorize."""
        if self.skip_layers is not None:
            return {net: {n[len(net) + 1 :] for n in self.skip_layers if n.startswith(net + ".")} for net in self.reported(module)}
        return {net: {output_layer(getattr(module, net), example_input(module, net))} for net in self.reported(module)}

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module) -> None:
        # ">=": a run resumed (or extended) past the configured epoch without the event still gets it
        if not self.done and trainer.current_epoch >= self.event_epoch(trainer.max_epochs):
            self._factorize(trainer, pl_module)

    # ------------------------------------------------------------------ the event
    def _factorize(self, trainer: Trainer, module) -> None:
        before = self.before_event(trainer, module)
        skip = self._skip(module)
        plans = {net: plan_ranks(getattr(module, net), example_input(module, net), self.rank_mode, self.rank_value, skip[net]) for net in self.scoped}
        ranks = {f"{net}.{p.layer}": p.rank for net, ps in plans.items() for p in ps if p.factorize}
        # Energy ranks come from floating-point sums: rank 0 decides, so every rank builds the same shapes.
        ranks = trainer.strategy.broadcast(ranks, src=0)
        self.plan_rows = [p.row(net) for net, ps in plans.items() for p in ps]
        self.ranks = ranks
        self.done = True
        if not ranks:
            log.warning(
                f"lowrank: no layer of {self.scope_text} gets cheaper at rank_mode {self.rank_mode},"
                f" rank_value {self.rank_value}; nothing was factorized"
            )
        else:
            changed = sorted({key.split(".", 1)[0] for key in ranks}, reverse=True)  # a GAN's generator first
            previous = {net: target_of(module).previous(net) for net in changed}
            edits = factorize_module(module, ranks)
            # new parameters: new optimizer moments, and under DDP a new wrapper (it also
            # broadcasts rank 0's factors, so SVD round-off cannot split the ranks)
            for net in changed:
                architecture_changed(trainer, module, net, previous[net], edit=edits[net])
        summary = report_event(
            trainer, module, "lowrank", before, self.report_dense(module), self.metric_name, self.fidelity,
            self.latency_batch, self.history,
        )
        if trainer.is_global_zero:
            log_table(trainer, "compress/lowrank_layers", PLAN_COLUMNS, self.plan_rows)
            extra = {"compress/lowrank_factorized": float(len(ranks))}
            energies = [row[PLAN_COLUMNS.index("energy")] for row in self.plan_rows if row[PLAN_COLUMNS.index("factorize")]]
            if energies:
                extra["compress/lowrank_min_energy"] = float(min(energies))
            for logger in trainer.loggers:
                logger.log_metrics(extra, step=logging_step(trainer))
        first = self.reported(module)[0]
        log.info(
            f"lowrank: epoch {trainer.current_epoch}: {len(ranks)} layer(s) factorized ({', '.join(f'{k} r={r}' for k, r in ranks.items()) or 'none'}):"
            f" {first} {summary[summary_key(first, 'macs')] / 1e6:.3f}M MACs/sample, {summary[summary_key(first, 'params')]:.0f} parameters,"
            f" latency x{summary['compress/speedup']:.2f}{quality_change(summary, self.metric_name)}"
        )

    def report_dense(self, module) -> dict[str, int]:
        """The dense reference mapped onto the current layers: a factorized layer's dense
        weight count is split over its two factors in proportion to their sizes, so each
        factor's row in ``compress/layers`` shows the layer's reduction and the totals (hence
        ``compress/sparsity``, the share of the dense weights gone) stay those of the dense network."""
        out: dict[str, int] = {}
        for key, count in self.dense.items():
            net, name = key.split(".", 1)
            layer = layer_of(name)
            try:
                owner = getattr(module, net).get_submodule(layer)
            except AttributeError:
                owner = None
            if not isinstance(owner, LowRank):
                out[key] = count
                continue
            sizes = [owner[0].weight.numel(), owner[1].weight.numel()]
            first = round(count * sizes[0] / sum(sizes))
            out[f"{net}.{layer}.0.weight"] = first
            out[f"{net}.{layer}.1.weight"] = count - first
        return out
