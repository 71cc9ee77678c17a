"""Where vtr keeps its data (models, indexes, catalogs): ``$VTR_HOME`` or the platform data dir."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "VTR_HOME"


def data_home(override: str | os.PathLike | None = None, create: bool = True) -> Path:
    """Return vtr's data home: ``override`` (``--home``), else ``$VTR_HOME``, else the user data dir."""
    if override is not None:
        home = Path(override)
    elif os.environ.get(ENV_HOME):
        home = Path(os.environ[ENV_HOME])
    else:
        import platformdirs

        home = Path(platformdirs.user_data_dir("vtr", appauthor=False))
    home = home.expanduser().resolve()
    if home.exists() and not home.is_dir():
        from vtr.errors import ConfigError

        raise ConfigError(f"the data home {str(home)!r} is not a folder: give --home (or $VTR_HOME) a folder")
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return home
