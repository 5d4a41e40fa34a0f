"""Deep learning with PyTorch: ``model.estimator: torch_mlp | torch_cnn | torch_gru | torch_lstm |
torch_transformer``, trained, exported to ONNX and registered as the same model package.

The life of a torch training run, module by module:

- ``params``: ``model.params`` validated (no torch import: ``import prodml`` never loads torch).
- ``modules``: the architectures, each a ``features`` backbone and a ``head``.
- ``sequences``: each customer's event history as a padded tensor, only events before the label time.
- ``trainer``: the loop (optimizers, schedulers, early stopping, clipping, mixed precision on CUDA,
  per-epoch callbacks for MLflow and progress bars); DDP under torchrun, one process's trajectory.
- ``checkpoint``: safetensors weights + a ``weights_only`` state dict; resume continues the curve.
- ``transfer``: pretrain a backbone, freeze it, fit a new head.
- ``distributed``: process-group set-up for ``torchrun`` (gloo on CPU, NCCL on GPUs).

Export (``prodml.export.torch``) and the pipeline entry (``prodml.pipeline.dl``) sit in the layers above.
"""

from prodml.dl.params import KINDS, TorchParams, is_torch, parse_params

__all__ = ["KINDS", "TorchParams", "is_torch", "parse_params"]
