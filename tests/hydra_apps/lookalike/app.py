"""Someone else's Hydra app whose config has keys that look like mlcli's (``optim._target_``,
``outputs_root``): mlcli's plug-ins must treat it as the foreign app it is."""

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> float:
    """Write the job's learning rate into its output dir and return it."""
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    (out / "lr.txt").write_text(str(cfg.optim.lr))
    return float(cfg.optim.lr)


if __name__ == "__main__":
    main()
