"""mlcli's Hydra plug-ins (discovered by Hydra through the ``hydra_plugins`` namespace package)."""
