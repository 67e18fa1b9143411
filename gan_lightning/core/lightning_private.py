"""Every place where gan-lightning reaches into Lightning's private API, in one module.

Each function says what public API was tried first and why it was not enough; the developer notes
(docs/developer.md) list them. Upgrading Lightning means re-checking this file (and the
private methods GANLightningCLI overrides, listed there too).
"""

from __future__ import annotations

from pytorch_lightning import Trainer
from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters
from pytorch_lightning.strategies import DDPStrategy, Strategy

from gan_lightning.logs import get_logger

log = get_logger(__name__)


def built_by_cli() -> bool:
    """Whether the LightningModule being constructed is being built by LightningCLI, which
    then stores the networks' class paths in its hyper-parameters. Public alternative tried:
    inspecting ``save_hyperparameters``' frame, which sees modules, not class paths."""
    return _given_hyperparameters.get() is not None


def find_unused_parameters(strategy: Strategy) -> None:
    """Turn on DDP's ``find_unused_parameters``: each backward of a GAN uses only one network's
    parameters, which plain DDP refuses. DDPStrategy takes the flag only in its constructor
    (public: ``--trainer.strategy ddp_find_unused_parameters_true``, which users forget) and
    wraps the model after ``setup()``, so this is the last point where it can be set for them."""
    if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters", False):
        strategy._ddp_kwargs["find_unused_parameters"] = True
        log.info("GANModule: DDP set to find_unused_parameters=True (D and G steps use disjoint parameters).")


def logging_step(trainer: Trainer) -> int:
    """The step that Lightning logs the latest scalars against.

    Lightning's x-axis counts batches, while ``trainer.global_step`` counts optimizer steps
    (``n_critic + 1`` a batch here), so images and tables logged at ``global_step`` would sit
    ahead of the scalars of the same moment. The counter is private to Lightning's loop
    (public alternative tried: ``trainer.global_step // (n_critic + 1)``, which breaks when
    a callback changes n_critic or a run resumes); the last completed batch is one before it.
    """
    return max(trainer.fit_loop.epoch_loop._batches_that_stepped - 1, 0)


def refresh_training_state(trainer: Trainer, keep_unchanged: bool = True) -> None:
    """After parameters were replaced: new optimizers over them (their moments described the old
    shapes) and, under DDP, a new wrapper, since DistributedDataParallel registered the old
    parameters in its gradient buckets. The wrapper's constructor also broadcasts rank 0's
    weights, so every rank continues from identical ones.

    ``keep_unchanged``: an optimizer whose parameters are all the very tensors it had before
    (a GAN's discriminator when only the generator was cut) keeps its moments, which still
    describe those weights: a fresh Adam would move every weight of an already trained
    discriminator by about its full learning rate in its first steps (the bias correction makes
    m/sqrt(v) ~ sign(g)), right when the generator is weakest (docs/balance.md). False: fresh
    moments for all (a rewind, a re-initialisation)."""
    strategy = trainer.strategy
    before = [(optimizer, [p for group in optimizer.param_groups for p in group["params"]]) for optimizer in strategy.optimizers]
    strategy.setup_optimizers(trainer)
    if keep_unchanged:
        for new in strategy.optimizers:
            params = [p for group in new.param_groups for p in group["params"]]
            for old, old_params in before:
                if type(old) is type(new) and len(old_params) == len(params) and all(a is b for a, b in zip(old_params, params)):
                    new.load_state_dict(old.state_dict())
                    break
    if isinstance(strategy, DDPStrategy) and trainer.world_size > 1:
        # no public API re-wraps a model mid-fit; this is what DDPStrategy.configure_ddp does
        strategy.model = strategy._setup_model(strategy.lightning_module)
        strategy._register_ddp_hooks()


def handler_calls(handler, ours) -> bool:
    """Whether ``handler`` is ``ours``, alone or inside the handler Lightning registers just
    before its loops start, which calls the one it found (ours, when a callback installed it in
    ``on_fit_start``). Lightning's composite handler is private (``_HandlersCompose``); no public
    API lists what it calls."""
    return handler == ours or any(h == ours for h in getattr(handler, "signal_handlers", ()))


def hand_back_signal_handler(trainer: Trainer, signum: int, ours, previous) -> None:
    """Make Lightning restore ``previous`` where it would restore ``ours`` for ``signum``.

    Lightning records the handlers it finds when it registers its own (after ``on_fit_start``)
    and puts them back in its teardown, which after an exception runs after every callback
    hook: a handler a callback installed in ``on_fit_start`` would outlive the fit and catch
    the next fit's signals. The record is private (``_SignalConnector._original_handlers``);
    no public API says which handler a fit will leave behind."""
    originals = trainer._signal_connector._original_handlers
    if originals.get(signum) == ours:
        originals[signum] = previous
