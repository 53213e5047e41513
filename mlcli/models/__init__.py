"""Model builders: plain functions ``(in_shape, out_features, **hparams) -> nn.Module``."""

from mlcli.models.basic import linear, mlp

__all__ = ["linear", "mlp"]
