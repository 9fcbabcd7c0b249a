"""Experiment engines: a command line, a result directory, captured outputs.

In: a subclass of ``Engine`` that overrides ``init`` (declare options) and
``run`` (the experiment), and a command line. Out: one *result directory*
per run, where the experiment writes its results and where stdout and
stderr can be copied or redirected. The life of one ``Engine.start()``::

    start(engineargs)
     ├─ setup_run_name()              run_name = "<ClassName>_<YYYYmmdd_HHMMSS>"
     ├─ init() of each Engine class   ancestor first, each once: they add
     │                                options and arguments to args_parser
     ├─ args_parser.parse_args()      args; -l sets the logger's level;
     │                                bad arguments exit with status 2
     ├─ -c DIR, or setup_result_dir()
     │  and a new directory           result_dir, never shared by two runs
     ├─ -L (copy) or -R (redirect)    stdout / stderr into the result
     │  [-M merges them]              directory's stdout.txt / stderr.txt
     ├─ run() of each Engine class    ancestor first, each once
     └─ outputs restored              also when run() raises; its traceback
                                      is written into stderr.txt first

Invariants:

- a new run never reuses a directory: the name gets ``_2``, ``_3``, ... when
  taken, and the directory is claimed with one atomic ``os.mkdir``, so two
  processes started in the same second get two directories;
- everything on the command line is checked before the result directory
  is created or an output captured;
- outputs are captured with file objects in pure Python (no ``fork``, no
  ``/usr/bin/tee``), so all of this works on Windows as well. A redirection
  also points file descriptors 1 and 2 at the files (``os.dup2``), so it
  takes the output of subprocesses too; a copy takes only what goes through
  ``sys.stdout`` and ``sys.stderr``.

``slugify`` turns a value (a sweep combination, say) into a file name,
``logger`` is the engines' logger, and ``redirect_outputs`` /
``copy_outputs`` capture stdout and stderr outside an engine too.

This follows execo_engine's ``Engine``; where it differs:

- ``init()`` runs before the command line is parsed (it declares the
  options), so ``args`` and ``result_dir`` are set only for ``run()``;
  ``setup_result_dir()`` is called after ``init()``, and only without ``-c``;
- the run name has no time zone suffix and gets ``_2``, ``_3``, ... when its
  directory exists; ``-c DIR`` requires ``DIR`` to exist;
- the output files are ``stdout.txt``, ``stderr.txt`` and, with ``-M``,
  ``stdout+stderr.txt``; ``-M`` without ``-L`` or ``-R``, and ``-L`` with
  ``-R``, are refused;
- ``start()`` restores stdout and stderr when the run ends.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import io
import itertools
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable
from typing import Any, TextIO

from .errors import InvalidStateError

__all__ = [
    "Engine",
    "OutputCapture",
    "copy_outputs",
    "logger",
    "redirect_outputs",
    "slugify",
]

#: Files of the result directory that ``-L`` / ``-R`` write, the last one
#: with ``-M``. A ``.txt`` suffix, unlike execo, so they open on Windows.
STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
MERGED_FILE = "stdout+stderr.txt"


# ---------------------------------------------------------------- logger


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record, so
    the records follow a redirection or copy of stderr."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO | None:  # type: ignore[override]
        return sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        if sys.stderr is not None:  # None under pythonw: nowhere to write
            super().emit(record)


#: The engines' logger, ``alma_dag.engine``. Its own handler writes each
#: record to the current ``sys.stderr``, so a redirected or copied stderr
#: gets the log too. It does not propagate, so a ``logging.basicConfig``
#: does not print each record twice; to route its records elsewhere,
#: remove its handler and set ``logger.propagate = True``. Its level is
#: INFO until ``-l`` (or you) set another.
logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)
logger.propagate = False
# Marked, not found by class: a reload of this module makes a new class.
if not any(getattr(h, "_alma_dag_engine", False) for h in logger.handlers):
    _handler = _StderrHandler()
    _handler._alma_dag_engine = True  # type: ignore[attr-defined]
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(_handler)


# --------------------------------------------------------------- slugify

# Device names that Windows refuses as a file name, whatever the suffix.
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"{device}{i}" for device in ("com", "lpt") for i in range(1, 10)]
)


def slugify(value: object) -> str:
    """A file name made from the text of ``value``, safe on every system.

    As in execo_engine (after Django): the text ``str(value)`` is reduced
    to ASCII (accents dropped, other non-ASCII characters removed),
    lowercased, stripped of everything but letters, digits, underscores,
    hyphens and whitespace; runs of whitespace and hyphens become one
    hyphen. Meant to name a file after a sweep combination.

    Beyond execo: hyphens and underscores are stripped from both ends (a
    leading hyphen reads as an option on a command line), and a result
    that is empty or a Windows device name (``con``, ``nul``, ``com1``, ...)
    gets an underscore appended, so the result is always a usable name.

    Parameters
    ----------
    value : object
        Anything with a meaningful ``str()``: a string, a number, a dict.

    Returns
    -------
    str
        A non-empty name of ASCII letters, digits, ``_`` and ``-``. Distinct
        values may give the same name: punctuation is dropped, so ``1.5``
        and ``15`` both give ``'15'``.

    Examples
    --------
    >>> slugify("Hello, World!")
    'hello-world'
    >>> slugify({"solver": "heft", "size": 100})
    'solver-heft-size-100'
    >>> slugify("  Déjà vu -- again  ")
    'deja-vu-again'
    >>> slugify("CON"), slugify("?!")
    ('con_', '_')
    """
    text = unicodedata.normalize("NFKD", str(value))
    text = text.encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    text = re.sub(r"[-\s]+", "-", text).strip("-_")
    if not text or text in _WINDOWS_RESERVED:
        text += "_"
    return text


# ------------------------------------------------------ output capture


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation too
        return None


class _Tee(io.TextIOBase):
    """A text stream that writes to several streams; stands in for
    ``sys.stdout`` or ``sys.stderr`` while outputs are captured.

    ``primary`` answers ``fileno``, ``isatty``, ``encoding`` and any other
    attribute: the original stream when copying, the file when redirecting.
    """

    def __init__(self, streams: list[TextIO], primary: TextIO, lock) -> None:
        super().__init__()
        self._streams = streams
        self._primary = primary
        # Shared by both tees of one capture: with -M they write one file,
        # and both copies of the output must get the writes in one order.
        self._lock = lock

    def write(self, text: str) -> int:
        with self._lock:
            for stream in self._streams:
                stream.write(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            for stream in self._streams:
                if not getattr(stream, "closed", False):
                    stream.flush()

    def write_files_only(self, text: str, files: list[TextIO]) -> None:
        with self._lock:
            for stream in self._streams:
                if stream in files:
                    stream.write(text)
                    stream.flush()

    def detach_files(self, original: TextIO | None) -> None:
        """Write to ``original`` alone from now on: a reference to this
        stream kept somewhere keeps working after the capture ends."""
        with self._lock:
            self._streams = [] if original is None else [original]
            if original is not None:
                self._primary = original

    def fileno(self) -> int:
        return self._primary.fileno()

    def isatty(self) -> bool:
        return self._primary.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._primary.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._primary.errors

    @property
    def buffer(self) -> _BufferTee:
        return _BufferTee(self)

    def __getattr__(self, name: str) -> Any:
        primary = self.__dict__.get("_primary")
        if primary is None:
            raise AttributeError(name)
        return getattr(primary, name)


class _BufferTee(io.BufferedIOBase):
    """``sys.stdout.buffer`` of a ``_Tee``: bytes go to each stream's
    buffer, after the text already written to it."""

    def __init__(self, tee: _Tee) -> None:
        super().__init__()
        self._tee = tee

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        data = bytes(data)
        with self._tee._lock:
            for stream in self._tee._streams:
                stream.flush()
                binary = getattr(stream, "buffer", None)
                if binary is None:
                    stream.write(data.decode(stream.encoding or "utf-8", "replace"))
                else:
                    binary.write(data)
                    binary.flush()
        return len(data)

    def flush(self) -> None:
        self._tee.flush()


class OutputCapture:
    """stdout and stderr copied or redirected to files, until ``restore()``.

    Made by ``redirect_outputs`` and ``copy_outputs``, already active. Use it
    as a context manager to restore the streams when the block ends,
    whether or not it raises; or call ``restore()``.

    Attributes
    ----------
    mode : str
        ``"copy"`` or ``"redirect"``.
    stdout_filename, stderr_filename : str or None
        The absolute paths of the files, ``None`` for a stream left alone.
        They are equal when both streams go to one file.
    fds : tuple of int
        The file descriptors (1 for stdout, 2 for stderr) pointed at the
        files as well, so subprocesses write there too.
    """

    def __init__(
        self,
        mode: str,
        stdout_filename: str | os.PathLike | None,
        stderr_filename: str | os.PathLike | None,
        fds: bool,
    ) -> None:
        self.mode = mode
        self.stdout_filename = _abspath(stdout_filename)
        self.stderr_filename = _abspath(stderr_filename)
        self.fds: tuple[int, ...] = ()
        self._lock = threading.RLock()
        self._files = _open_files(self.stdout_filename, self.stderr_filename)
        # (name in sys, fd, original stream, tee, file, saved fd or None)
        self._captured: list[tuple[str, int, Any, _Tee, TextIO, int | None]] = []
        try:
            for name, fd, path in (
                ("stdout", 1, self.stdout_filename),
                ("stderr", 2, self.stderr_filename),
            ):
                if path is not None:
                    self._capture(name, fd, self._files[os.path.normcase(path)], fds)
        except BaseException:
            self.restore()
            raise
        self.fds = tuple(entry[1] for entry in self._captured if entry[5] is not None)

    def _capture(self, name: str, fd: int, file: TextIO, fds: bool) -> None:
        original = getattr(sys, name)
        if original is not None:
            original.flush()
        saved = None
        # Descriptor level only when the stream really writes descriptor
        # fd: not under pythonw (no stream), nor under a test's capture.
        if self.mode == "redirect" and fds and _fileno(original) == fd:
            saved = os.dup(fd)
            os.dup2(file.fileno(), fd)
        if self.mode == "copy" and original is not None:
            tee = _Tee([file, original], original, self._lock)
        else:
            tee = _Tee([file], file, self._lock)
        setattr(sys, name, tee)
        self._captured.append((name, fd, original, tee, file, saved))

    @property
    def is_active(self) -> bool:
        """Whether the streams are still captured (``restore()`` not called)."""
        return bool(self._captured)

    def restore(self) -> None:
        """Put the original ``sys.stdout`` / ``sys.stderr`` (and file
        descriptors) back and close the files. Calling it again does nothing.

        A stream replaced again since, by someone else, is left in place;
        the capture's stand-in then writes to the original stream alone.
        Restore nested captures in reverse order.
        """
        for name, fd, original, tee, _file, saved in reversed(self._captured):
            tee.flush()
            if saved is not None:
                os.dup2(saved, fd)
                os.close(saved)
            tee.detach_files(original)
            if getattr(sys, name) is tee:
                setattr(sys, name, original)
        self._captured = []
        for file in self._files.values():
            file.close()
        self._files = {}

    def write_to_stderr_file(self, text: str) -> None:
        """Write ``text`` into the stderr file only, not the terminal: how
        ``Engine.start`` records the traceback of a failed run."""
        for name, _fd, _original, tee, file, _saved in self._captured:
            if name == "stderr":
                tee.write_files_only(text, [file])

    def __enter__(self) -> OutputCapture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def __repr__(self) -> str:
        state = "active" if self.is_active else "restored"
        return (
            f"<OutputCapture {self.mode} stdout={self.stdout_filename!r} "
            f"stderr={self.stderr_filename!r} {state}>"
        )


def _abspath(path: str | os.PathLike | None) -> str | None:
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"an output file name must be a str or a path, got "
            f"{type(path).__name__} {path!r}"
        )
    return os.path.abspath(os.fspath(path))


def _open_files(*paths: str | None) -> dict[str, TextIO]:
    """One file per distinct path (keyed by its ``normcase``), opened for
    appending, line-buffered so that it can be followed while the run goes
    on. All or none."""
    files: dict[str, TextIO] = {}
    try:
        for path in paths:
            # normcase: on Windows "Out.txt" and "out.txt" are one file.
            if path is not None and os.path.normcase(path) not in files:
                files[os.path.normcase(path)] = (
                    open(  # closed by OutputCapture.restore()
                        path,
                        "a",
                        encoding="utf-8",
                        errors="backslashreplace",
                        buffering=1,
                    )
                )
    except BaseException:
        for file in files.values():
            file.close()
        raise
    return files


def redirect_outputs(
    stdout_filename: str | os.PathLike | None = None,
    stderr_filename: str | os.PathLike | None = None,
    *,
    fds: bool = True,
) -> OutputCapture:
    """Send stdout and stderr to files instead of the terminal, until
    restored; give both the same name to merge them into one file.

    ``sys.stdout`` / ``sys.stderr`` are replaced by streams that write to
    the files (appending, UTF-8, flushed at each line). With ``fds`` (the
    default), file descriptors 1 / 2 are pointed at the files too, so that
    subprocesses and C extensions write there as well; this is done only
    for a stream that really writes to that descriptor (not under
    ``pythonw``, nor under a test runner's capture of ``sys.stdout``).
    ``os.dup2`` does this on Windows as on POSIX; there is no ``fork``.

    Parameters
    ----------
    stdout_filename, stderr_filename : str or path, optional
        The files for stdout and for stderr; a stream whose file is ``None``
        is left alone. The same name for both gives one merged file.
    fds : bool, default True
        Also redirect file descriptors 1 / 2, where possible.

    Returns
    -------
    OutputCapture
        Active already; ``restore()`` it, or use it in a ``with`` block.

    Raises
    ------
    OSError
        If a file cannot be opened; nothing is redirected then.
    TypeError
        If a file name is not a string or a path.

    See Also
    --------
    copy_outputs : write to the files and to the terminal.

    Examples
    --------
    >>> from pathlib import Path
    >>> with redirect_outputs("redirected.txt", "redirected.txt"):
    ...     print("into the file")
    >>> Path("redirected.txt").read_text()
    'into the file\\n'
    """
    return OutputCapture("redirect", stdout_filename, stderr_filename, fds)


def copy_outputs(
    stdout_filename: str | os.PathLike | None = None,
    stderr_filename: str | os.PathLike | None = None,
) -> OutputCapture:
    """Copy stdout and stderr to files, still writing them where they went
    before, until restored; give both the same name to merge them.

    ``sys.stdout`` / ``sys.stderr`` are replaced by streams that write each
    text both to the original stream and to the file (appending, UTF-8,
    flushed at each line): a ``tee`` in pure Python, which works on
    Windows. It copies what goes through ``sys.stdout`` and ``sys.stderr``
    (``print``, ``logging``, tracebacks, ``logger``); what subprocesses and
    C extensions write straight to file descriptors 1 and 2 reaches the
    terminal only. To keep a subprocess's output, capture it
    (``subprocess.run(..., capture_output=True, text=True)``) and print it.

    Parameters
    ----------
    stdout_filename, stderr_filename : str or path, optional
        The files for stdout and for stderr; a stream whose file is ``None``
        is left alone. The same name for both gives one merged file.

    Returns
    -------
    OutputCapture
        Active already; ``restore()`` it, or use it in a ``with`` block.

    Raises
    ------
    OSError
        If a file cannot be opened; nothing is copied then.
    TypeError
        If a file name is not a string or a path.

    See Also
    --------
    redirect_outputs : write to the files only.

    Examples
    --------
    >>> from pathlib import Path
    >>> with copy_outputs("copied.txt"):
    ...     print("on the terminal and in the file")
    on the terminal and in the file
    >>> Path("copied.txt").read_text()
    'on the terminal and in the file\\n'
    """
    return OutputCapture("copy", stdout_filename, stderr_filename, False)


# ---------------------------------------------------------------- Engine


def _create_unique_dir(path: str) -> str:
    """Create and return ``path``, or ``path_2``, ``path_3``, ... for the
    first that does not exist yet; ``os.mkdir`` is atomic, so concurrent
    callers never get the same directory."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    for n in itertools.count(1):
        candidate = path if n == 1 else f"{path}_{n}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def _log_level(text: str) -> int:
    """``-l``'s value: a level name in any case, or a number."""
    try:
        return int(text)
    except ValueError:
        pass
    level = logging.getLevelName(text.upper())
    if not isinstance(level, int):
        raise argparse.ArgumentTypeError(
            f"unknown log level {text!r}: give a name (DEBUG, INFO, WARNING, "
            "ERROR, CRITICAL) or a number"
        )
    return level


def _command_line(argv: list[str]) -> str:
    if os.name == "nt":
        return subprocess.list2cmdline(argv)
    return shlex.join(argv)


def _once_per_chain(method: Callable) -> Callable:
    """Wrap an Engine subclass's ``init`` / ``run`` so that, during
    ``start()``, a second call (a ``super().init()`` from a subclass) does
    nothing: the chain has already called it, ancestor first."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        called = self.__dict__.get("_chain_called")
        if called is not None:
            if wrapper in called:
                return None
            called.add(wrapper)
        return method(self, *args, **kwargs)

    wrapper._engine_once = True  # type: ignore[attr-defined]
    return wrapper


class Engine:
    """Base class of experiment engines: subclass it, override ``init()``
    and ``run()``, and call ``start()``.

    ``start()`` gives each run:

    - options and arguments: each class's ``init()`` adds its own to
      ``args_parser``, and the parsed command line is in ``args``;
    - a result directory of its own, ``result_dir``, or with ``-c DIR``
      the directory of a previous run to continue in;
    - stdout / stderr copied (``-L``) or redirected (``-R``) to
      ``stdout.txt`` / ``stderr.txt`` in it, merged into
      ``stdout+stderr.txt`` with ``-M``;
    - the level of ``logger`` chosen with ``-l``.

    The ``init()`` and ``run()`` of every ``Engine`` class in the hierarchy
    are called, ancestor first, each once: a generic engine declares its
    options or prepares the environment before the experiment subclass
    does. A subclass therefore does not call ``super().init()`` or
    ``super().run()``; if it does, that call does nothing during
    ``start()``. Classes in the hierarchy that do not derive from
    ``Engine`` (mixins) are not part of the chain.

    Options of every engine:

    ``-l LEVEL``
        Level of ``logger``: a name (``DEBUG``, ``info``, ...) or a number.
        Default: leave it (INFO unless changed).
    ``-L``
        Copy stdout / stderr to files in the result directory.
    ``-R``
        Redirect stdout / stderr to files in the result directory, output
        of subprocesses included (see ``redirect_outputs``).
    ``-M``
        With ``-L`` or ``-R``: merge stdout and stderr into one file.
    ``-c DIR``
        Continue in the result directory ``DIR`` of a previous run, which
        must exist; output files are appended to.

    Attributes
    ----------
    args_parser : argparse.ArgumentParser
        Add options and arguments to it in ``init()``.
    args : argparse.Namespace or None
        The parsed options and arguments; set before ``run()``, not
        available in ``init()``.
    run_name : str or None
        The name of this run, ``<ClassName>_<YYYYmmdd_HHMMSS>`` by default,
        set before ``init()``; override ``setup_run_name`` to change it. It
        gets the same ``_2``, ``_3``, ... suffix as the result directory.
    result_dir : str or None
        Absolute path of this run's result directory, created before
        ``run()``: where results, sweeper state and captured outputs go.
        By default ``run_name`` in the current directory; override
        ``setup_result_dir`` to change it.
    engine_dir : str or None
        The directory of the file that defines the engine's class; ``None``
        when it was defined interactively.

    Examples
    --------
    >>> from pathlib import Path
    >>> class Hello(Engine):
    ...     def init(self):
    ...         self.args_parser.add_argument("--name", default="world")
    ...     def run(self):
    ...         Path(self.result_dir, "hello.txt").write_text(f"hi {self.args.name}")
    >>> engine = Hello()
    >>> engine.start(["--name", "engine"])
    >>> Path(engine.result_dir).name == engine.run_name
    True
    >>> Path(engine.result_dir, "hello.txt").read_text()
    'hi engine'
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("init", "run"):
            method = cls.__dict__.get(name)
            if inspect.isfunction(method) and not hasattr(method, "_engine_once"):
                setattr(cls, name, _once_per_chain(method))

    def __init__(self) -> None:
        module = sys.modules.get(type(self).__module__)
        module_file = getattr(module, "__file__", None)
        self.engine_dir: str | None = (
            os.path.dirname(os.path.realpath(module_file)) if module_file else None
        )
        self.args_parser = argparse.ArgumentParser(description=self._description())
        self._add_engine_options(self.args_parser)
        self.args: argparse.Namespace | None = None
        self.run_name: str | None = None
        self.result_dir: str | None = None
        self._started = False
        self._chain_called: set | None = None

    def _description(self) -> str:
        name = type(self).__name__
        doc = type(self).__doc__
        if doc and doc.strip():
            return f"engine {name}: {doc.strip().splitlines()[0]}"
        return f"engine {name}"

    @staticmethod
    def _add_engine_options(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("engine options")
        group.add_argument(
            "-l",
            dest="log_level",
            type=_log_level,
            default=None,
            metavar="LEVEL",
            help="log level: DEBUG, INFO, WARNING, ERROR, CRITICAL or a number "
            "(default: INFO)",
        )
        outputs = group.add_mutually_exclusive_group()
        outputs.add_argument(
            "-L",
            dest="output_mode",
            action="store_const",
            const="copy",
            default=None,
            help="copy stdout / stderr to files in the result directory",
        )
        outputs.add_argument(
            "-R",
            dest="output_mode",
            action="store_const",
            const="redirect",
            help="redirect stdout / stderr to files in the result directory",
        )
        group.add_argument(
            "-M",
            dest="merge_outputs",
            action="store_true",
            help=f"with -L or -R, merge stdout and stderr into {MERGED_FILE}",
        )
        group.add_argument(
            "-c",
            dest="continue_dir",
            default=None,
            metavar="DIR",
            help="continue in DIR, the result directory of a previous run",
        )

    def start(self, engineargs: list[str] | None = None) -> None:
        """Run the engine: set it up, call every ``init()``, parse the
        command line, then call every ``run()``.

        Parameters
        ----------
        engineargs : list of str, optional
            The command line arguments; ``sys.argv[1:]`` by default.

        Raises
        ------
        SystemExit
            With status 2 after printing the usage, on bad arguments or a
            ``-c`` directory that does not exist (nothing is created then);
            with status 0 after ``-h``.
        InvalidStateError
            If this engine was started before: make a new one per run.
        """
        if self._started:
            raise InvalidStateError(
                f"{type(self).__name__}.start() was already called: an "
                "engine runs once; make a new instance for another run"
            )
        self._started = True
        argv = list(sys.argv[1:] if engineargs is None else engineargs)
        self.setup_run_name()
        self._call_chain("init")
        self.args = self.args_parser.parse_args(argv)
        self._check_args()
        if self.args.log_level is not None:
            logger.setLevel(self.args.log_level)
        self._make_result_dir()
        capture = self._capture_outputs()
        try:
            logger.info("command line: %s", _command_line(sys.argv[:1] + argv))
            if self.args.continue_dir is None:
                logger.info("run %s in %s", self.run_name, self.result_dir)
            else:
                logger.info("run %s continues in %s", self.run_name, self.result_dir)
            self._call_chain("run")
        except BaseException as exc:
            if capture is not None and not isinstance(exc, SystemExit):
                capture.write_to_stderr_file("".join(traceback.format_exception(exc)))
            raise
        finally:
            if capture is not None:
                capture.restore()

    def _call_chain(self, name: str) -> None:
        """Call ``name`` as defined by each Engine class, ancestor first."""
        self._chain_called = set()
        try:
            for cls in reversed(type(self).__mro__):
                if issubclass(cls, Engine) and name in vars(cls):
                    vars(cls)[name].__get__(self, cls)()
        finally:
            self._chain_called = None

    def _check_args(self) -> None:
        args = self.args
        if args.merge_outputs and not args.output_mode:
            self.args_parser.error("-M merges the outputs of -L or -R: add one")
        if args.continue_dir is not None and not os.path.isdir(args.continue_dir):
            self.args_parser.error(
                f"-c {args.continue_dir}: no such result directory; give the "
                "directory of a previous run, or leave out -c to start a new one"
            )

    def _make_result_dir(self) -> None:
        if self.args.continue_dir is not None:
            self.result_dir = os.path.abspath(self.args.continue_dir)
            return
        self.setup_result_dir()
        wanted = os.path.abspath(self.result_dir)
        self.result_dir = _create_unique_dir(wanted)
        self.run_name += self.result_dir[len(wanted) :]

    def _capture_outputs(self) -> OutputCapture | None:
        mode = self.args.output_mode
        if mode is None:
            return None
        if self.args.merge_outputs:
            stdout = stderr = os.path.join(self.result_dir, MERGED_FILE)
            where = stdout
        else:
            stdout = os.path.join(self.result_dir, STDOUT_FILE)
            stderr = os.path.join(self.result_dir, STDERR_FILE)
            where = f"{stdout} and {stderr}"
        if mode == "copy":
            capture = copy_outputs(stdout, stderr)
            logger.info("stdout / stderr copied to %s", where)
            return capture
        # Said before redirecting, so that it shows where the output went.
        logger.info("stdout / stderr redirected to %s", where)
        return redirect_outputs(stdout, stderr)

    # -------------------------------------------- for subclasses to override

    def setup_run_name(self) -> None:
        """Set ``run_name``: by default the class name and the local date
        and time, ``<ClassName>_<YYYYmmdd_HHMMSS>``.

        Called first in ``start()``, before any ``init()``. A name whose
        result directory exists already gets a suffix ``_2``, ``_3``, ...
        """
        self.run_name = f"{type(self).__name__}_{time.strftime('%Y%m%d_%H%M%S')}"

    def setup_result_dir(self) -> None:
        """Set ``result_dir``: by default ``run_name`` in the current
        directory.

        Called after every ``init()`` and the parsing of the command line
        (so it may use ``args``), and not at all with ``-c``. The directory
        is then created, with a suffix ``_2``, ``_3``, ... if it exists.
        """
        self.result_dir = os.path.abspath(self.run_name)

    def init(self) -> None:
        """Prepare the engine: override it to add options and arguments to
        ``args_parser``. The default does nothing.

        ``start()`` calls the ``init()`` of every Engine class of the
        hierarchy, ancestor first, so a generic engine declares its options
        before the experiment that derives from it. Do not call
        ``super().init()``. ``args`` and ``result_dir`` are not set yet.
        """

    def run(self) -> None:
        """Run the experiment: override it. The default does nothing.

        ``start()`` calls the ``run()`` of every Engine class of the
        hierarchy, ancestor first, so a generic engine prepares the
        environment before the experiment that derives from it. Do not call
        ``super().run()``. ``args``, ``run_name`` and ``result_dir`` are
        set, and outputs are captured as asked.
        """
