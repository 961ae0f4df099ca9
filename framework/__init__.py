"""refit: keep transformer models good after they ship.

Fine-tune, search, compress, export, watch for drift and repair, driven by the `refit` CLI.
"""

from refit.errors import ConfigError, DataError, ModelError, RefitError, VersionError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "ModelError", "RefitError", "VersionError", "__version__"]
