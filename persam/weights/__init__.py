"""Official checkpoints: the catalogue of files, the local cache, downloads, and loading with clear
errors.

* :mod:`~persam.weights.catalog`: the official checkpoint files (URL, sha256, size);
* :mod:`~persam.weights.cache`: where files are cached, their digests, :func:`verify`;
* :mod:`~persam.weights.download`: resumable verified :func:`download`, :func:`resolve_checkpoint`;
* :mod:`~persam.weights.reading`: :func:`read_state_dict` turns a file into a flat
  ``{key: tensor}`` dict (unwrapping the usual containers);
* :mod:`~persam.weights.loading`: :func:`load_into` loads it strictly into a module, explaining a
  mismatch in one line.

Every public name is importable from ``persam.weights`` itself.
"""

from __future__ import annotations

from persam.errors import UnverifiedCheckpointWarning, WeightsError
from persam.weights.cache import (
    PathLike,
    VerifyResult,
    cache_dir,
    cache_location,
    cache_state,
    cached_path,
    checkpoint_identity,
    checkpoints_dir,
    file_sha256,
    verify,
)
from persam.weights.catalog import CHECKPOINTS, CheckpointInfo, checkpoint_names, format_size, get_info
from persam.weights.download import download, resolve_checkpoint
from persam.weights.loading import describe_mismatch, infer_model_name, load_into
from persam.weights.reading import read_state_dict

__all__ = [
    "CHECKPOINTS",
    "CheckpointInfo",
    "PathLike",
    "UnverifiedCheckpointWarning",
    "VerifyResult",
    "WeightsError",
    "cache_dir",
    "cache_location",
    "cache_state",
    "cached_path",
    "checkpoint_identity",
    "checkpoint_names",
    "checkpoints_dir",
    "describe_mismatch",
    "download",
    "file_sha256",
    "format_size",
    "get_info",
    "infer_model_name",
    "load_into",
    "read_state_dict",
    "resolve_checkpoint",
    "verify",
]
