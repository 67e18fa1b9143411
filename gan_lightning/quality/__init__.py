"""Sample quality: feature spaces, FID/KID/IS/precision/recall (torch-fidelity), mode coverage,
sliced Wasserstein distance, and the one evaluation function used by training and the
evaluate command.

May import: torch, torch-fidelity, gan_lightning.compress and the leaves; never Lightning,
callbacks, the core, datamodules or commands (a ``module`` argument needs only ``generate``)."""
