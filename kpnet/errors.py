"""Exceptions raised by kpnet. Each message names the problem and the fix."""

from __future__ import annotations


class KpnetError(Exception):
    """Base class of every kpnet error."""


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
