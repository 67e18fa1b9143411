"""distill: train the compressed generator (the student) to match its dense teacher.

The teacher is, by default, the sampling generator (the EMA copy when there is one) as it was
just before a compression callback (prune, lowrank) first changed the generator's layers:
the ``on_architecture_changed`` GAN hook hands it over, so this callback imports no other
callback. ``--distill.teacher_ckpt PATH`` takes the teacher from a train.py checkpoint
instead; the student is then whatever generator the run trains (a compressed one, or a
smaller ``--model.generator``). ``--distill.student`` is a new, smaller generator that
replaces the run's at ``--distill.student_epoch`` (see ``callbacks/distill_student.py``).

Loss terms, weighted, join the generator's loss through ``generator_loss_terms`` (logged as
``train/g_term/distill_*``): outputs on the same latents, features at named layers (through
1x1 adapters in ``GANModule.auxiliary`` where shapes differ, trained with G, never exported),
kernel alignment and discriminator features; the adversarial term stays, scaled by
``gan_weight``. The math is in :mod:`gan_lightning.distill`.

The teacher is frozen and saved in this callback's state with a hash of its weights, so
``--ckpt_path`` resumes with the same teacher. Any other LightningModule: ``distill_any_module.py``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from pytorch_lightning import Trainer
from torch import nn
from typing_extensions import override

from callbacks.compression import forget_best_checkpoints
from callbacks.distill_any_module import check_any_module, output_terms
from callbacks.distill_student import StudentReplacement
from callbacks.distill_teacher import check_teacher, load_teacher_checkpoint
from callbacks.registry import register
from callbacks.state import StateContract
from callbacks.target import LossTerms, target_of
from gan_lightning.compress.edits import EditRecord
from gan_lightning.compress.profiling import batchnorm_momentum, evaluating, network_cost
from gan_lightning.compress.surgery import INPUT_KEY
from gan_lightning.core.hooks import GANCallback
from gan_lightning.core.lightning_private import logging_step
from gan_lightning.distill.losses import OutputLoss, adapter, adapter_key, alignment_loss, feature_loss, output_loss, perceptual_loss
from gan_lightning.distill.taps import FeatureTaps, TrainingCalls, check_layers, default_feature_layers
from gan_lightning.distill.teacher import capture_teacher, rebuild_teacher, teacher_record, weights_hash
from gan_lightning.errors import ConfigError
from gan_lightning.logs import get_logger

log = get_logger(__name__)

AUXILIARY = "distill"  # the key of the adapters in GANModule.auxiliary


@register("distill")
class Distill(StateContract, GANCallback):
    """Distils the dense teacher into the compressed (or smaller) generator.

    Args:
        teacher_ckpt: a train.py checkpoint whose sampling generator is the teacher; default:
            the generator just before a compression callback first changes it.
        output_loss: ``l1`` (default, as GAN Compression) or ``mse`` between student and
            teacher samples of the same latents.
        output_weight: weight of the output term (>= 0).
        feature_weight: weight of the intermediate-feature term (>= 0; 0 turns taps off).
        feature_layers: generator module paths whose outputs are matched; default: its hidden
            activations (after each block), e.g. ``[stem.2, blocks.2]`` for the bundled DCGAN.
        alignment_weight: weight of the kernel-alignment term on the same layers (>= 0).
        perceptual_weight: weight of the L1 between discriminator features of student and
            teacher samples (>= 0).
        perceptual_layers: discriminator module paths for the perceptual term; default: its
            hidden activations.
        gan_weight: factor on the adversarial term while distilling (0 turns it off: the student
            learns from the teacher alone, which a student trained from scratch needs early on).
        student: a new generator that replaces the run's and is trained from the teacher, as
            ``{class_path: ..., init_args: {...}}``; the class path defaults to the run's
            generator's and the init args are merged over the run's, so ``{init_args: {width: 8}}``
            is a narrower copy of the configured generator. Not with a compression callback on
            the generator (that one makes the student).
        student_epoch: the epoch at whose start the student replaces the generator; default 0
            with ``teacher_ckpt``, else half of ``--trainer.max_epochs`` (the run's own
            generator trains first and becomes the teacher).
        network: on a LightningModule that is not a GANModule (and only there), the attribute of
            the network to distil, e.g. ``"model"``: only the output term is used (``output_loss``
            ``mse`` matches a classifier's logits), ``feature_weight`` is ignored and the other
            settings above that need a GAN are refused.
    """

    option_group = "distill"
    # the teacher's record (spec, edits, weights, hash) and the adapters' shapes
    STATE = {"teacher": lambda: None, "adapter_shapes": dict}

    def __init__(
        self,
        teacher_ckpt: Optional[str] = None,
        output_loss: OutputLoss = "l1",
        output_weight: float = 1.0,
        feature_weight: float = 1.0,
        feature_layers: Optional[list[str]] = None,
        alignment_weight: float = 0.0,
        perceptual_weight: float = 0.0,
        perceptual_layers: Optional[list[str]] = None,
        gan_weight: float = 1.0,
        student: Optional[dict[str, Any]] = None,
        student_epoch: Optional[int] = None,
        network: Optional[str] = None,
    ) -> None:
        weights = {"output_weight": output_weight, "feature_weight": feature_weight, "alignment_weight": alignment_weight,
                   "perceptual_weight": perceptual_weight, "gan_weight": gan_weight}
        for flag, value in weights.items():
            if not value >= 0:
                raise ConfigError(f"--distill.{flag} must be a number >= 0, got {value}")
        if output_loss not in ("l1", "mse"):
            raise ConfigError(f"--distill.output_loss must be l1 or mse, got {output_loss!r}")
        self.teacher_ckpt = teacher_ckpt
        self.output_loss = output_loss
        self.weights = weights
        self.feature_layers = feature_layers
        self.perceptual_layers = perceptual_layers
        self.network = network
        self.student_epoch = student_epoch
        self.replacement = None if student is None else StudentReplacement(student, student_epoch, teacher_ckpt)
        self.reset_state()
        # --- runtime only
        self.teacher_net: Optional[nn.Module] = None
        self._taps: dict[str, FeatureTaps] = {}
        self._calls: Optional[TrainingCalls] = None  # any other LightningModule: the student's training calls
        self._loss_terms: Optional[LossTerms] = None  # ... and the wrapper adding the output term to its loss
        self._latents: Optional[torch.Tensor] = None
        self._stale = False  # the taps hook an older teacher object
        self._edits_at_start = EditRecord()  # the module's edits when this run started (see on_fit_start)

    # ------------------------------------------------------------------ checks
    @property
    def tap_weight(self) -> float:
        return self.weights["feature_weight"] + self.weights["alignment_weight"]

    def check_setup(self, trainer: Trainer, module, datamodule) -> None:
        """Refuse, before training, settings that cannot work with this model and trainer."""
        target = target_of(module)
        target.check_networks(None if self.network is None else [self.network], "--distill.network", 'Distill(network="model")')
        if not target.gan_hooks:
            check_any_module(self, trainer, module)
            return
        if self.feature_layers is not None:
            check_layers(module.generator, self.feature_layers, "--distill.feature_layers")
        if self.perceptual_layers is not None:
            check_layers(module.discriminator, self.perceptual_layers, "--distill.perceptual_layers")
        compressing = [cb for cb in trainer.callbacks if "generator" in (getattr(cb, "scoped", None) or ())]
        if self.replacement is not None:
            self.replacement.check(trainer, module, compressing)
        elif self.student_epoch is not None:
            raise ConfigError("--distill.student_epoch is the epoch at which --distill.student replaces the generator: give --distill.student too")
        elif self.teacher_ckpt is None and not compressing:
            raise ConfigError(
                "--callbacks distill needs a teacher and a student: switch on a compression callback that changes the generator"
                " (--callbacks prune,distill or lowrank,distill), or give --distill.student (a new generator, taught by the"
                " run's generator or by --distill.teacher_ckpt PATH), or --distill.teacher_ckpt PATH"
            )
        if self.teacher_ckpt is not None and self.teacher_net is None:
            self._load_teacher_checkpoint(module)

    @staticmethod
    def _latent_index(module) -> torch.Tensor:
        """For each of the student's latent dimensions, its index in the original (teacher's) z."""
        kept = module.edits.kept("generator").get(INPUT_KEY)
        return torch.tensor(kept if kept is not None else range(module.z_dim), dtype=torch.long)

    # ------------------------------------------------------------------ the teacher
    def _load_teacher_checkpoint(self, module) -> None:
        teacher, spec, edits = load_teacher_checkpoint(self.teacher_ckpt)
        check_teacher(teacher, module, self._latent_index(module), f"--distill.teacher_ckpt {self.teacher_ckpt}")
        self._adopt_teacher(teacher, spec, edits, str(self.teacher_ckpt))

    def _adopt_teacher(self, teacher: nn.Module, spec, edits: EditRecord, source: str) -> None:
        self.teacher, self.teacher_net = capture_teacher(teacher, spec, edits, source)
        log.info(f"distill: teacher from {source} ({sum(p.numel() for p in self.teacher_net.parameters()):,} parameters)")

    # ------------------------------------------------------------------ taps and adapters
    def _attach(self, module) -> None:
        """(Re)attach the feature taps by path and size the adapters to the current student; on
        any other LightningModule, keep the student network's training calls."""
        if not target_of(module).gan_hooks:
            if self._calls is not None:
                self._calls.remove()
            self.teacher_net.to(module.device)
            self._calls = TrainingCalls(getattr(module, self.network))
            return
        self._stale = False
        for taps in self._taps.values():
            taps.remove()
        self._taps = {}
        teacher = self.teacher_net.to(module.device)
        if self.tap_weight > 0:
            layers = self.feature_layers if self.feature_layers is not None else default_feature_layers(module.generator)
            self._taps["student"] = FeatureTaps(module.generator, layers)
            self._taps["teacher"] = FeatureTaps(teacher, layers)
        if self.weights["perceptual_weight"] > 0:
            layers = self.perceptual_layers if self.perceptual_layers is not None else default_feature_layers(module.discriminator)
            self._taps["discriminator"] = FeatureTaps(module.discriminator, layers)
        self._latents = self._latent_index(module).to(module.device)
        if self.weights["feature_weight"] > 0:
            with torch.no_grad(), evaluating(module.generator, teacher):
                z = torch.zeros(2, module.z_dim, device=module.device)
                module.generator(z)
                teacher(self._teacher_latents(z, teacher))
            student, target = self._taps["student"].collect(), self._taps["teacher"].collect()
            shapes = {p: [list(s.shape), list(target[p].shape)] for p, s in student.items() if s.shape != target[p].shape}
            if shapes != self.adapter_shapes or AUXILIARY not in module.auxiliary:
                # new shapes: new adapters (a resumed run gets its saved ones from the checkpoint)
                adapters = nn.ModuleDict({adapter_key(p): adapter(torch.Size(s), torch.Size(t)) for p, (s, t) in shapes.items()})
                module.auxiliary[AUXILIARY] = adapters.to(module.device)
                self.adapter_shapes = shapes

    def _teacher_latents(self, z: torch.Tensor, teacher: nn.Module) -> torch.Tensor:
        """The teacher's latents for the student's: the student's kept dimensions in their
        original places, zeros where latent pruning removed a dimension (the student ignores it)."""
        full = z.new_zeros(len(z), teacher.z_dim)
        full[:, self._latents] = z
        return full

    # ------------------------------------------------------------------ Lightning and GAN hooks
    @override
    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        if not target_of(pl_module).gan_hooks:  # no GAN hooks: the output term joins the loss training_step returns
            self.check_setup(trainer, pl_module, trainer.datamodule)
            self._loss_terms = LossTerms(pl_module, lambda: output_terms(self._calls, self.teacher_net, self.output_loss, self.weights["output_weight"]))
        elif self.teacher is None:
            self.check_setup(trainer, pl_module, trainer.datamodule)  # loads a --distill.teacher_ckpt teacher
        if self.teacher_net is not None:
            self._attach(pl_module)

    @override
    def restore_auxiliary(self, trainer: Trainer, module, checkpoint: dict[str, Any]) -> None:
        # Resuming means the same teacher: the saved one, and adapters of the saved shapes, must
        # exist before the checkpoint's weights load into them and the optimizers are built,
        # which is before Lightning restores this callback's own state.
        saved = checkpoint.get("callbacks", {}).get(self.state_key)
        if saved and saved.get("teacher"):
            self.load_state_dict(saved)
            self._attach(module)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module) -> None:
        # after a resumed checkpoint's edits are replayed, before this run changes anything: the
        # edits a teacher taken from this run's first change has
        self._edits_at_start = getattr(pl_module, "edits", EditRecord()).copy()

    @override
    def on_architecture_changed(self, trainer: Trainer, module, network: str, previous: Optional[nn.Module]) -> None:
        student = target_of(module).student(self.network)
        if self.teacher_net is None and network == student and previous is not None:
            self._adopt_previous(trainer, module, previous, f"the {student} before compression")
        if self.teacher_net is not None:
            self._attach(module)

    def _adopt_previous(self, trainer: Trainer, module, previous: nn.Module, source: str) -> None:
        """The network as it was before this run first changed it becomes the teacher."""
        # BatchNorm statistics are each rank's own: rank 0's teacher is everyone's
        previous.load_state_dict(trainer.strategy.broadcast(previous.state_dict(), src=0))
        spec = target_of(module).teacher_spec(previous)
        self._adopt_teacher(previous, spec, self._edits_at_start, source)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module) -> None:
        if self.replacement is not None and self.replacement.is_due(trainer, pl_module):
            self._replace_generator(trainer, pl_module)

    def _replace_generator(self, trainer: Trainer, module) -> None:
        previous = target_of(module).previous("generator")
        if self.teacher_net is None:
            self._adopt_previous(trainer, module, previous, f"the run's generator at epoch {trainer.current_epoch}")
        spec = self.replacement.replace(module, previous)
        # "best" now means the best student: the teacher's checkpoints (files kept) would hold the title
        for path in forget_best_checkpoints(trainer):
            log.info(f"distill: the best checkpoint so far ({path}) holds the generator before the student; it is kept, and best-* now tracks the student")
        z = torch.zeros(2, module.z_dim, device=module.device)
        student, teacher = network_cost(module.generator, z), network_cost(self.teacher_net, self._teacher_latents(z, self.teacher_net))
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({"compress/g_macs": float(student.macs), "compress/g_params": float(student.params)}, step=logging_step(trainer))
        restarts_d = any(getattr(cb, "restarts_discriminator", False) for cb in trainer.callbacks)
        if self.weights["gan_weight"] > 0 and not restarts_d:
            log.warning(
                "distill: a student trained from scratch against an already trained discriminator tends to collapse (docs/balance.md:"
                " FID ~800-1700 and one class on the digits); let the discriminator restart when it overpowers the student"
                " (the balance control, on in train.py unless --balance.mode off) or train it from the teacher alone with --distill.gan_weight 0"
            )
        log.info(
            f"distill: epoch {trainer.current_epoch}: the generator is now the student {spec['class_path']}({spec['init_args']}):"
            f" {student.macs / 1e6:.3f}M MACs/sample, {teacher.macs / max(student.macs, 1):.2f}x fewer than the teacher's;"
            f" {student.params:,} parameters (teacher {teacher.params:,})"
        )

    @override
    def adversarial_weight(self, trainer: Trainer, module) -> float:
        return self.weights["gan_weight"] if self.teacher_net is not None else 1.0

    @override
    def generator_loss_terms(self, trainer: Trainer, module, z: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.teacher_net is None:
            return {}
        if self._stale:
            self._attach(module)
        w = self.weights
        # the student's taps hold the features of ``fake``'s forward pass, the discriminator's
        # those of the adversarial term's pass over it: collect them before the teacher runs
        student = self._taps["student"].collect() if "student" in self._taps else {}
        judged = self._taps["discriminator"].collect() if "discriminator" in self._taps else {}
        with torch.no_grad():
            target = self.teacher_net(self._teacher_latents(z, self.teacher_net))
            teacher = self._taps["teacher"].collect() if "teacher" in self._taps else {}
            if judged:
                with batchnorm_momentum(module.discriminator, 0.0):  # D's statistics stay those of real and student samples
                    module.discriminator(target)
                judged_teacher = self._taps["discriminator"].collect()
        terms = {}
        if w["output_weight"] > 0:
            terms["distill_output"] = w["output_weight"] * output_loss(fake, target, self.output_loss)
        if w["feature_weight"] > 0:
            terms["distill_feature"] = w["feature_weight"] * feature_loss(student, teacher, module.auxiliary[AUXILIARY])
        if w["alignment_weight"] > 0:
            terms["distill_alignment"] = w["alignment_weight"] * alignment_loss(student, teacher)
        if judged:
            terms["distill_perceptual"] = w["perceptual_weight"] * perceptual_loss(judged, judged_teacher)
        return terms

    @override
    def teardown(self, trainer: Trainer, pl_module, stage: str) -> None:
        for taps in self._taps.values():
            taps.remove()
        self._taps = {}
        for attached in (self._calls, self._loss_terms):
            if attached is not None:
                attached.remove()
        self._calls = self._loss_terms = None

    # ------------------------------------------------------------------ state
    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.teacher is not None:
            self.teacher = teacher_record(self.teacher)  # one written before the edit record: its current form
        if self.teacher is None:
            self.teacher_net = None
        elif self.teacher_net is None or weights_hash(self.teacher_net) != self.teacher["sha256"]:
            self.teacher_net = rebuild_teacher(self.teacher)
            self._stale = True  # its taps attach at the next step
