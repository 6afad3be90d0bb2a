"""Exceptions raised by kpnet. Each message names the problem and the fix.

Every kpnet error derives from :class:`KpnetError`; errors about a value (a setting, an image,
a size string) also derive from ``ValueError``, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class KpnetError(Exception):
    """Base class of every kpnet error."""


class ConfigError(KpnetError, ValueError):
    """A setting (decoding, working size, model config, CLI value) is invalid."""


class InvalidImageError(KpnetError, ValueError):
    """The image given to the detector has the wrong type, shape, dtype, size or values."""


class ModelLoadError(KpnetError, ValueError):
    """A model file exists but cannot be loaded (corrupt, wrong format, wrong keys)."""


class ModelNotFoundError(KpnetError, FileNotFoundError):
    """A model or weights file does not exist."""


class UnsupportedModelError(KpnetError, ValueError):
    """The model file's suffix matches no backend."""


class MissingDependencyError(KpnetError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ProviderUnavailableError(KpnetError, RuntimeError):
    """A requested device, execution provider or precision is not available here."""


class BackendNotImplementedError(KpnetError, NotImplementedError):
    """A backend that is planned but not implemented yet."""


class BackendClosedError(KpnetError, RuntimeError):
    """A backend (or detector) was used after ``close()``."""
