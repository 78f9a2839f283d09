"""Files: saving and loading converted networks (no code runs on load), loading user models, weights and data.

Names load on first use (``fxsnn.io.read_header``).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "save": ".saving",
    "load": ".saving",
    "read_header": ".saving",
    "header_summary": ".saving",
    "header_stages": ".saving",
    "SaveFileError": ".saving",
    "load_model": ".loaders",
    "load_weights": ".loaders",
    "load_data": ".loaders",
    "InputError": ".loaders",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .loaders import InputError, load_data, load_model, load_weights
    from .saving import SaveFileError, header_stages, header_summary, load, read_header, save

__all__ = list(_EXPORTS)
