"""The generator outside the training run: TorchScript and ONNX files verified against the
PyTorch model, the model card that describes them, the runtimes that run them, and
inference-only rewrites of layers that are slow in those runtimes.

May import: torch, onnx/onnxruntime (the ``export`` extra, imported only when ONNX is used),
gan_lightning.compress and the leaves; never Lightning, W&B, callbacks, the core or data, so
that an exported generator runs where only torch (or only onnxruntime) is installed."""
