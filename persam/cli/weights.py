"""``persam weights``: list, download, verify and locate the official checkpoints.

Exit codes: 0 success; 1 ``verify`` found a checksum mismatch; 2 error (unknown name, missing file,
failed download).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from persam import registry
from persam import weights as w
from persam.cli.options import EXIT_PARTIAL, fail

_PROG = "persam weights"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list, download and verify model checkpoints",
        description=f"Manage the official checkpoints, cached in {w.checkpoints_dir()} "
        "(set PERSAM_HOME to move the cache).",
    )
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION")

    p = sub.add_parser(
        "list",
        help="show the known checkpoints and which are cached",
        description="List the official checkpoints: name (for --model), size, whether it is cached, "
        "and its path in the cache.",
    )
    p.set_defaults(func=_list)

    p = sub.add_parser(
        "download", help="download a checkpoint into the cache (resumes an interrupted download)"
    )
    p.add_argument("name", metavar="NAME", help="checkpoint name, see 'persam weights list'")
    p.add_argument("--dir", type=Path, default=None, help="download into DIR instead of the cache")
    p.add_argument("--url", default=None, help="download from URL (a mirror) instead of the official address")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_download)

    p = sub.add_parser("verify", help="check sha256 digests (default: every cached checkpoint)")
    p.add_argument("target", nargs="?", metavar="NAME|PATH", help="a checkpoint name or a file")
    p.set_defaults(func=_verify)

    p = sub.add_parser("path", help="print the path of a cached checkpoint")
    p.add_argument("name", metavar="NAME", help="checkpoint name, see 'persam weights list'")
    p.set_defaults(func=_path)

    parser.set_defaults(func=lambda args: _help(parser))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _official_checkpoints() -> list[tuple[str, w.CheckpointInfo]]:
    """``(name, catalogue entry)``: each registered model with official weights under its model
    name, then any catalogue entry no model points at under its own name."""
    rows = []
    for name in registry.list_models():
        entry = registry.get_spec(name).checkpoint
        if entry is not None:
            rows.append((name, w.get_info(entry)))
    used = {info.name for _, info in rows}
    rows += [(info.name, info) for info in w.CHECKPOINTS.values() if info.name not in used]
    return rows


def _checkpoint_info(name: str) -> w.CheckpointInfo:
    """The catalogue entry of a model name (see 'persam weights list') or of an entry name.

    Raises:
        WeightsError: neither, listing the known names.
    """
    if registry.is_registered(name):
        entry = registry.get_spec(name).checkpoint
        if entry is not None:
            return w.get_info(entry)
    return w.get_info(name)


def _list(args: argparse.Namespace) -> int:
    rows = [("NAME", "MODEL", "SIZE", "CACHED", "PATH")]
    for name, info in _official_checkpoints():
        cached = w.cached_path(info)
        rows.append(
            (
                name,
                info.model,
                w.format_size(info.size),
                w.cache_state(info),
                str(cached or w.cache_location(info)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(n) for c, n in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _download(args: argparse.Namespace) -> int:
    try:
        info = _checkpoint_info(args.name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", w.UnverifiedCheckpointWarning)
            path = w.download(info, args.dir, url=args.url, progress=not args.quiet)
    except w.WeightsError as e:
        return fail(_PROG, f"--dir {e}" if args.dir is not None and str(args.dir) in str(e) else str(e))
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted; the partial download is kept, run the command again to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    for warning in caught:
        print(f"{_PROG}: warning: {warning.message}", file=sys.stderr)
    print(path)
    return 0


def _verify_line(result: w.VerifyResult) -> str:
    label = result.name or "-"
    if result.status == "ok":
        return f"OK        {label}  {result.path}  sha256 {result.actual}"
    if result.status == "mismatch":
        return f"MISMATCH  {label}  {result.path}  expected {result.expected}, got {result.actual}"
    return f"UNKNOWN   {label}  {result.path}  sha256 {result.actual} (no published checksum)"


def _verify(args: argparse.Namespace) -> int:
    try:
        if args.target is not None:
            target = args.target
            if registry.is_registered(target) and registry.get_spec(target).checkpoint is not None:
                target = _checkpoint_info(target)
            results = [w.verify(target)]
        else:
            infos = [info for _, info in _official_checkpoints()]
            cached = [p for p in map(w.cached_path, infos) if p is not None]
            if not cached:
                print(f"no checkpoints cached in {w.checkpoints_dir()}")
                return 0
            results = [w.verify(p) for p in cached]
    except w.WeightsError as e:
        return fail(_PROG, str(e))
    for result in results:
        print(_verify_line(result))
    bad = [r for r in results if not r.ok]
    if bad:
        n = len(bad)
        print(
            f"{_PROG}: error: {n} checkpoint{'s' * (n != 1)} failed verification: {bad[0].path}",
            file=sys.stderr,
        )
        return EXIT_PARTIAL
    return 0


def _path(args: argparse.Namespace) -> int:
    try:
        info = _checkpoint_info(args.name)
    except w.WeightsError as e:
        return fail(_PROG, str(e))
    path = w.cached_path(info)
    if path is None:
        return fail(
            _PROG,
            f"{info.name} is not downloaded (it would be stored at {w.cache_location(info)}); "
            f"run: persam weights download {info.name}",
        )
    print(path)
    return 0
