"""The label cache: configuration, on-disk format, manifest validation.

Layout of a cache directory::

    CACHE/
      manifest.json          # format, config, teacher settings, image list,
                             # skipped images with reasons, completion state
      entries/<key>.npz      # one compressed file per image (key = sha1 of
                             # the image's relative path, 16 hex digits)

Each entry holds (coordinates: (x, y) pixels of the stored image, pixel
centres at integers):

* ``image``: uint8 ``[H, W]`` grayscale at the training resolution;
* ``keypoints``: float32 ``[N, 2]`` and ``scores``: float32 ``[N]`` (phase 1);
* ``homographies``: float64 ``[P, 3, 3]`` mapping the image to its warped
  copy, ``match_kpts0`` / ``match_kpts1``: float32 ``[M, 2]`` matched
  keypoints of all P pairs concatenated, ``match_splits``: int64 ``[P + 1]``
  offsets of pair ``p`` (phase 2);
* ``dense`` (only with ``store_dense``): uint8 ``[H, W]`` teacher score map
  quantised as ``round(255 * score)``;
* ``source``: the image's relative path.

Every file is written under a temporary name and atomically renamed
(:func:`kpnet.io.atomic_path`, flushed to disk), so a killed run leaves either
a complete file or none; a rerun removes the temporary files and skips finished
entries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from kpnet.io import atomic_path, atomic_write_bytes

from .homography import HomographyConfig
from .matching import MatchConfig
from .teachers import TeacherConfig

FORMAT = "kpnet-label-cache"
VERSION = 1
MANIFEST = "manifest.json"
ENTRIES = "entries"


class CacheMismatchError(ValueError):
    """The cache on disk was built with a different configuration."""


@dataclass(frozen=True)
class CacheConfig:
    """Everything that determines the labels in a cache.

    Attributes:
        teacher: the teacher and its detection settings.
        match: the pair matcher (phase 2).
        homography: ranges of the random homographies (phase 2).
        size: training resolution ``(width, height)``, as manifests store it; both
            multiples of 8 (SuperPoint's cell). On the command line it is HxW like
            every kpnet size: ``--size 240x320`` is the default ``(320, 240)``. Note
            its height 240 is not a multiple of 32: a stride-32 student pads it (or
            use ``--size 256x320``).
        pairs_per_image: homographic pairs per image (0: phase 1 only).
        min_side: images with a shorter side below this (pixels) are skipped.
        seed: base seed; each image's homographies depend only on it and the
            image's relative path.
        store_dense: also store the teacher's dense score map.
        homographic_adaptation: average the stored dense map over this many extra random
            homographies (SuperPoint's homographic adaptation; 0 = off; needs store_dense).
            Omitted from the manifest when 0, so caches made before the option stay valid.
    """

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    homography: HomographyConfig = field(default_factory=HomographyConfig)
    size: tuple[int, int] = (320, 240)
    pairs_per_image: int = 2
    min_side: int = 64
    seed: int = 0
    store_dense: bool = False
    homographic_adaptation: int = 0

    def __post_init__(self) -> None:
        if len(self.size) != 2 or any(int(v) != v or v <= 0 or v % 8 for v in self.size):
            raise ValueError(
                f"size must be (width, height) with both positive multiples of 8, e.g. (320, 240), which is "
                f"--size 240x320 (HEIGHTxWIDTH); got {self.size}"
            )
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        if self.pairs_per_image < 0:
            raise ValueError(f"pairs_per_image must be >= 0; got {self.pairs_per_image}")
        if self.min_side < 1:
            raise ValueError(f"min_side must be >= 1; got {self.min_side}")
        if self.homographic_adaptation < 0:
            raise ValueError(f"homographic_adaptation must be >= 0; got {self.homographic_adaptation}")
        if self.homographic_adaptation and not self.store_dense:
            raise ValueError("homographic_adaptation averages the dense score map; it needs store_dense (--dense)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with teacher defaults resolved (as in manifests)."""
        d = asdict(self)
        d["teacher"] = asdict(self.teacher.resolved())
        d["size"] = list(self.size)
        if not self.homographic_adaptation:
            del d["homographic_adaptation"]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CacheConfig":
        """Build from a (possibly partial) nested dict, e.g. a YAML config.

        Raises:
            ValueError: on unknown keys, listing the valid ones.
        """
        sub = {"teacher": TeacherConfig, "match": MatchConfig, "homography": HomographyConfig}
        kwargs: dict[str, Any] = {}
        valid = [f.name for f in fields(cls)]
        for key, value in data.items():
            if key not in valid:
                raise ValueError(f"unknown cache config key {key!r}; choose from: {', '.join(valid)}")
            if key in sub:
                sub_valid = [f.name for f in fields(sub[key])]
                bad = [k for k in value if k not in sub_valid]
                if bad:
                    raise ValueError(f"unknown {key} config key {bad[0]!r}; choose from: {', '.join(sub_valid)}")
                kwargs[key] = sub[key](**value)
            elif key == "size":
                if isinstance(value, str):
                    raise ValueError(
                        f"size in a cache config is [width, height], as manifests store it, e.g. [320, 240]; got "
                        f"{value!r}. A size string belongs on the command line: --size HEIGHTxWIDTH, e.g. 240x320"
                    )
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


def entry_key(relpath: str) -> str:
    """File stem of an image's entry: 16 hex digits of sha1(relative path)."""
    return hashlib.sha1(relpath.encode("utf-8")).hexdigest()[:16]


def image_seed(seed: int, relpath: str) -> int:
    """Per-image seed, independent of processing order and worker."""
    return int.from_bytes(hashlib.sha1(f"{seed}:{relpath}".encode("utf-8")).digest()[:8], "little")


def write_entry(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write one compressed ``.npz`` entry atomically."""
    with atomic_path(path, fsync=True) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest.json`` atomically."""
    atomic_write_bytes(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=False).encode("utf-8"), fsync=True)


def read_manifest(root: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``manifest.json``.

    Raises:
        FileNotFoundError: no manifest. ValueError: not a label-cache manifest.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"no label cache at {root} ({MANIFEST} missing); build one with python -m training.labels"
        )
    manifest = json.loads(path.read_text("utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path}: cache format version {manifest.get('version')}, this code reads version {VERSION}")
    return manifest


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if is_dataclass(d):
        d = asdict(d)
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(d, tuple):
        d = list(d)
    return {prefix[:-1]: d}


def config_differences(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Human-readable ``'field: cache has X, expected Y'`` lines for differing fields."""
    a, b = _flatten(found), _flatten(expected)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            lines.append(f"{key}: cache has {a.get(key, '<missing>')!r}, expected {b.get(key, '<missing>')!r}")
    return lines


def check_config(manifest: Mapping[str, Any], expected: CacheConfig | Mapping[str, Any], where: str = "") -> None:
    """Raise :class:`CacheMismatchError` naming every field that differs."""
    exp = expected.to_dict() if isinstance(expected, CacheConfig) else dict(expected)
    diffs = config_differences(manifest.get("config", {}), exp)
    if diffs:
        raise CacheMismatchError(
            f"label cache {where} was built with a different configuration; mismatching fields:\n  "
            + "\n  ".join(diffs)
            + "\nrebuild it into a new folder, or use a config that matches."
        )


@dataclass
class CacheEntry:
    """One image's labels (see the module docstring for shapes and units)."""

    source: str
    image: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    homographies: np.ndarray
    pairs: list[tuple[np.ndarray, np.ndarray]]
    dense: Optional[np.ndarray] = None


def read_entry(path: str | Path) -> CacheEntry:
    """Load one ``.npz`` entry."""
    with np.load(str(path), allow_pickle=False) as z:
        splits = z["match_splits"]
        k0, k1 = z["match_kpts0"], z["match_kpts1"]
        pairs = [(k0[splits[i] : splits[i + 1]], k1[splits[i] : splits[i + 1]]) for i in range(len(splits) - 1)]
        return CacheEntry(
            source=str(z["source"]),
            image=z["image"],
            keypoints=z["keypoints"],
            scores=z["scores"],
            homographies=z["homographies"],
            pairs=pairs,
            dense=(z["dense"].astype(np.float32) / 255.0) if "dense" in z.files else None,
        )


class LabelCache:
    """A validated label cache; index it to get :class:`CacheEntry` objects."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        skipped = manifest.get("skipped", {})
        self.sources = [p for p in manifest["images"] if p not in skipped]
        self.paths = [root / ENTRIES / f"{entry_key(p)}.npz" for p in self.sources]

    @property
    def config(self) -> CacheConfig:
        return CacheConfig.from_dict(self.manifest["config"])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> CacheEntry:
        return read_entry(self.paths[i])

    def __iter__(self) -> Iterator[CacheEntry]:
        for i in range(len(self)):
            yield self[i]


def load_cache(
    root: str | Path, expected_config: CacheConfig | Mapping[str, Any] | None = None, require_complete: bool = True
) -> LabelCache:
    """Open a label cache, refusing one that does not match ``expected_config``.

    Args:
        root: cache directory.
        expected_config: the configuration the caller trains with; every
            differing field is named in the error. None skips the check.
        require_complete: refuse a cache whose labelling run did not finish.

    Raises:
        FileNotFoundError, ValueError, CacheMismatchError.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if expected_config is not None:
        check_config(manifest, expected_config, where=str(root))
    cache = LabelCache(root, manifest)
    if require_complete:
        missing = [s for s, p in zip(cache.sources, cache.paths) if not p.is_file()]
        if not manifest.get("complete") or missing:
            raise ValueError(
                f"label cache {root} is incomplete ({len(missing)} of {len(cache.sources)} entries missing); "
                "rerun python -m training.labels with the same arguments to resume"
            )
    return cache
