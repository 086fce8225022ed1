"""The demo's work folder: examples and per-request results, removed when the demo stops.

A folder the demo created itself (the default, under the system temporary folder) is removed
entirely at exit; a folder given with ``--work-dir`` is the user's, so only the result folders of
this run go (the examples stay, to be reused at the next start).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

RUN_PREFIX = "run-"


class WorkDir:
    """A work folder that cleans up after itself.

    Args:
        path: the folder to use (kept at exit, except this run's results), or None for a fresh
            temporary folder (removed at exit).
        max_age_s: result folders older than this are removed when a new request starts, so a
            long-running demo does not fill the disk.
    """

    def __init__(self, path: Path | None = None, max_age_s: float = 3600.0) -> None:
        self.owned = path is None
        self.path = Path(tempfile.mkdtemp(prefix="persam-demo-")) if path is None else Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        self._runs: list[Path] = []
        self._lock = threading.Lock()
        atexit.register(self.cleanup)

    def new_run(self) -> Path:
        """A fresh folder for one request's files (old ones are removed first)."""
        now = time.time()
        for d in self.path.glob(RUN_PREFIX + "*"):
            try:
                if now - d.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass  # removed by a concurrent request
        run = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=self.path))
        with self._lock:
            self._runs.append(run)
        return run

    def cleanup(self) -> None:
        """Removes what this run made (safe to call more than once)."""
        with self._lock:
            runs, self._runs = self._runs, []
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for run in runs:
            shutil.rmtree(run, ignore_errors=True)


def cleanup_on_sigterm(*work_dirs: WorkDir) -> None:
    """Cleans ``work_dirs`` when the process is terminated (SIGTERM, SIGHUP), then dies of that signal.

    Python runs ``atexit`` handlers on a normal exit and on Ctrl+C only; a service manager or
    ``kill`` sends SIGTERM, which would otherwise leave the folders behind. Call from the main thread.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        for wd in work_dirs:
            wd.cleanup()
        # Dying of the signal itself keeps the exit status a supervisor expects (128 + signum).
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, handler)
