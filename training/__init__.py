"""Distillation data pipeline for kpnet (needs ``pip install kpnet[train]``).

* :mod:`training.teachers` -- frozen keypoint teachers (SuperPoint, ALIKED).
* :mod:`training.homography` -- random homographies; warping of images,
  points, heatmaps and masks.
* :mod:`training.matching` -- LightGlue / matcher-free matching of teacher
  keypoints between an image and its warped copy.
* :mod:`training.masks` -- binary (phase 1) and blob (phase 2) label masks.
* :mod:`training.cache` -- label-cache format and ``load_cache``.
* :mod:`training.labels` -- ``python -m training.labels`` builds a cache.
* :mod:`training.phase1` / :mod:`training.phase2` -- ``python -m training.phase1``
  (keypointness) and ``python -m training.phase2 --init CKPT`` (homography consistency),
  built on :mod:`training.train_config`, :mod:`training.data`, :mod:`training.augment`,
  :mod:`training.losses` and :mod:`training.trainer`.
"""
