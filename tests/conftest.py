"""Shared fixtures: every test leaves no dispatcher thread behind, and the
session ends with no worker process left."""

from __future__ import annotations

import faulthandler
import sys
import threading
import time

import psutil
import pytest

#: Seconds any blocking wait in a test may take before the test fails.
WAIT = 60


def run_to_end(dispatcher):
    """Start ``dispatcher`` (or an experiment run) and wait for the end of
    its run; past ``WAIT`` seconds, dump every thread's stack and fail."""
    dispatcher.start()
    if not dispatcher.wait(WAIT):
        faulthandler.dump_traceback(all_threads=True)
        dispatcher.stop(WAIT)
        pytest.fail(f"the run did not end in {WAIT} s: {dispatcher.progress()}")
    return dispatcher


def _dispatcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "alma_dag-dispatcher"]


@pytest.fixture(autouse=True)
def no_dispatcher_left():
    yield
    deadline = time.monotonic() + 10
    while _dispatcher_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    left = _dispatcher_threads()
    assert not left, f"dispatcher threads left running: {left}"


def _workers() -> list[psutil.Process]:
    """Child processes, less the resource trackers that loky and
    multiprocessing keep for the life of the interpreter."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_worker_left():
    yield
    from alma_dag.backends.loky import shutdown_pool

    shutdown_pool()
    deadline = time.monotonic() + 10
    children = _workers()
    while children and time.monotonic() < deadline:
        time.sleep(0.05)
        children = _workers()
    if children:
        sys.stderr.write(f"worker processes left: {children}\n")
    assert not children, f"worker processes left: {children}"
