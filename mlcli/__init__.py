"""mlcli: a command-line experiment runner on Hydra/OmegaConf configs and PyTorch."""

__version__ = "0.1.0"
