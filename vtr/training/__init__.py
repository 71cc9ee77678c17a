"""Training with Lightning: configs, the LightningModule, the data module and ``train()`` (``vtr train``).

Import the submodules directly (``vtr.training.run.train``); they import Lightning, which needs
:func:`vtr.compat.ensure_torchvision` first — the submodules take care of that.
"""

from vtr.training.config import ConfigError, TrainConfig, list_configs, load_config

__all__ = ["ConfigError", "TrainConfig", "list_configs", "load_config"]
