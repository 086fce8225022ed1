"""With ``PERSAM_REQUIRE_TOOLS=1`` (CI's environment of Label Studio and FiftyOne), a test of an
integration that would be skipped (its tool missing, FiftyOne's database not starting) fails
instead, so that a broken install cannot pass as skipped tests."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest


def _required() -> bool:
    return os.environ.get("PERSAM_REQUIRE_TOOLS", "") not in ("", "0")


def _fail(report: Any) -> None:
    report.outcome = "failed"
    report.longrepr = f"skipped, but PERSAM_REQUIRE_TOOLS is set: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if _required() and report.skipped:
        _fail(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if _required() and report.skipped:
        _fail(report)
