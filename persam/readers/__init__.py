"""Data in: video frame sources, background decoding, first-frame masks and DAVIS conventions."""

from persam.readers.davis import DAVIS_PALETTE, davis_palette, davis_sequence
from persam.readers.first_mask import FirstMask, load_first_mask
from persam.readers.prefetch import Prefetcher
from persam.readers.video import (
    DEFAULT_FPS,
    VIDEO_EXTENSIONS,
    ArraySource,
    FolderSource,
    FrameSource,
    VideoInfo,
    frame_size,
    open_video,
)

__all__ = [
    "DAVIS_PALETTE",
    "DEFAULT_FPS",
    "VIDEO_EXTENSIONS",
    "ArraySource",
    "FirstMask",
    "FolderSource",
    "FrameSource",
    "Prefetcher",
    "VideoInfo",
    "davis_palette",
    "davis_sequence",
    "frame_size",
    "load_first_mask",
    "open_video",
]
