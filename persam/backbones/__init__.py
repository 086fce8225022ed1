"""Backbones: a promptable segmentation model bound to one image at a time (see :mod:`.base`)."""

from persam.backbones.base import Backbone, DecoderOutput

__all__ = ["Backbone", "DecoderOutput"]
