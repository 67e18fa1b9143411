"""Knowledge distillation in pure torch: feature taps by module path, adapters between
student and teacher features, and the distillation losses. Used by callbacks/distill.py.

May import: torch, gan_lightning.compress and the leaves; never Lightning, callbacks, the
core, metrics or data."""
