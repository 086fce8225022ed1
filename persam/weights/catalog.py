"""The catalogue of official checkpoint files: where each is downloaded from, its sha256 and size.

This is the one table of checkpoint files; the model registry (:mod:`persam.registry`) points its
models at these entries by name. Entry names are the names of the models the weights belong to
(``sam_vit_h``, ``mobile_sam_vit_t``, ``efficient_sam_vit_s``, ...).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from persam.errors import WeightsError


@dataclass(frozen=True)
class CheckpointInfo:
    """One downloadable checkpoint.

    Attributes:
        name: registry name (the name of the model the weights belong to).
        model: the architecture, in words.
        filename: name of the checkpoint file in the cache (after unpacking, for zipped downloads).
        url: where to download it; the last path component is the name of the downloaded file.
        sha256: hex digest of the downloaded file, ``None`` when no digest is published.
        size: size in bytes of the downloaded file, ``None`` when unknown.
        description: one-line description.
    """

    name: str
    model: str
    filename: str
    url: str
    sha256: str | None
    size: int | None
    description: str

    @property
    def download_name(self) -> str:
        """File name of the download itself (differs from ``filename`` for a zipped checkpoint)."""
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(self.url).path)).name
        return name or self.filename

    @property
    def zipped(self) -> bool:
        """Whether the download is a zip archive wrapping ``filename``."""
        return self.download_name != self.filename and self.download_name.lower().endswith(".zip")


_SAM = "https://dl.fbaipublicfiles.com/segment_anything/"

CHECKPOINTS: dict[str, CheckpointInfo] = {
    info.name: info
    for info in (
        CheckpointInfo(
            name="sam_vit_h",
            model="SAM ViT-H",
            filename="sam_vit_h_4b8939.pth",
            url=_SAM + "sam_vit_h_4b8939.pth",
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            size=2_564_550_879,
            description="Segment Anything, ViT-H image encoder (Meta AI)",
        ),
        CheckpointInfo(
            name="sam_vit_l",
            model="SAM ViT-L",
            filename="sam_vit_l_0b3195.pth",
            url=_SAM + "sam_vit_l_0b3195.pth",
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            size=1_249_524_607,
            description="Segment Anything, ViT-L image encoder (Meta AI)",
        ),
        CheckpointInfo(
            name="sam_vit_b",
            model="SAM ViT-B",
            filename="sam_vit_b_01ec64.pth",
            url=_SAM + "sam_vit_b_01ec64.pth",
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            size=375_042_383,
            description="Segment Anything, ViT-B image encoder (Meta AI)",
        ),
        CheckpointInfo(
            name="mobile_sam_vit_t",
            model="MobileSAM ViT-T",
            filename="mobile_sam.pt",
            url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            size=40_728_226,
            description="MobileSAM: TinyViT image encoder distilled from SAM ViT-H, SAM decoder",
        ),
        CheckpointInfo(
            name="efficient_sam_vit_t",
            model="EfficientSAM ViT-T",
            filename="efficient_sam_vitt.pt",
            url="https://github.com/yformer/EfficientSAM/raw/main/weights/efficient_sam_vitt.pt",
            sha256=None,
            size=None,
            description="EfficientSAM-Ti: ViT-Tiny image encoder trained with SAMI",
        ),
        CheckpointInfo(
            name="efficient_sam_vit_s",
            model="EfficientSAM ViT-S",
            filename="efficient_sam_vits.pt",
            url="https://github.com/yformer/EfficientSAM/raw/main/weights/efficient_sam_vits.pt.zip",
            sha256=None,
            size=None,
            description="EfficientSAM-S: ViT-Small image encoder trained with SAMI (ships zipped)",
        ),
    )
}

_SAM2_SIZES = (
    ("t", "tiny", "Hiera-T"),
    ("s", "small", "Hiera-S"),
    ("b+", "base_plus", "Hiera-B+"),
    ("l", "large", "Hiera-L"),
)
# SAM 2 files as the official download script names them. Meta publishes no sha256 or byte size
# for them, so none is recorded: downloads are checked for being a loadable checkpoint instead.
for _prefix, _release, _when in (("sam2.1", "092824", "2024-09"), ("sam2", "072824", "2024-07")):
    for _size, _file, _arch in _SAM2_SIZES:
        _info = CheckpointInfo(
            name=f"{_prefix}_hiera_{_size}",
            model=f"SAM {_prefix[3:]} {_arch}",
            filename=f"{_prefix}_hiera_{_file}.pt",
            url=f"https://dl.fbaipublicfiles.com/segment_anything_2/{_release}/{_prefix}_hiera_{_file}.pt",
            sha256=None,
            size=None,
            description=f"Segment Anything {_prefix[3:]} ({_when}), {_arch} encoder, memory tracker",
        )
        CHECKPOINTS[_info.name] = _info


def checkpoint_names() -> list[str]:
    """Registry names of the official checkpoints, in registry order."""
    return list(CHECKPOINTS)


def get_info(name: str) -> CheckpointInfo:
    """The registry entry ``name``; :class:`WeightsError` listing the known names otherwise."""
    try:
        return CHECKPOINTS[name]
    except KeyError:
        raise WeightsError(
            f"no official checkpoint named {name!r} (known: {', '.join(CHECKPOINTS)})"
        ) from None


def as_info(name_or_info: str | CheckpointInfo) -> CheckpointInfo:
    """``name_or_info`` itself, or the entry of that name (see :func:`get_info`)."""
    return name_or_info if isinstance(name_or_info, CheckpointInfo) else get_info(name_or_info)


def format_size(n: int | None) -> str:
    """``375042383`` -> ``"357.7 MiB"``; ``None`` -> ``"?"``."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
