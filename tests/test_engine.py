"""Engine: the init/run chain, result directories, the engine options, and
the output capture (redirect_outputs, copy_outputs); slugify and logger.

Engines are started in-process with an explicit ``engineargs`` list, in a
temporary working directory; the example engine runs in a subprocess, as a
user would run it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import WAIT

import alma_dag.engine as engine_module
from alma_dag.engine import (
    Engine,
    copy_outputs,
    logger,
    redirect_outputs,
    slugify,
)
from alma_dag.errors import InvalidStateError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "engine" / "sweep_engine.py"


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    """Every test runs in an empty directory, and leaves the engines'
    logger at its default level and the standard streams as it found them."""
    monkeypatch.chdir(tmp_path)
    stdout, stderr = sys.stdout, sys.stderr
    yield tmp_path
    logger.setLevel(logging.INFO)
    assert sys.stdout is stdout and sys.stderr is stderr, "streams not restored"


# A hierarchy Base -> Child -> GrandChild; each init and run records itself.
calls: list[str] = []


class Base(Engine):
    def init(self):
        calls.append("Base.init")

    def run(self):
        calls.append("Base.run")


class Child(Base):
    def init(self):
        calls.append("Child.init")
        self.args_parser.add_argument("--size", type=int, default=1)

    def run(self):
        calls.append("Child.run")


class GrandChild(Child):
    def init(self):
        calls.append("GrandChild.init")

    def run(self):
        calls.append("GrandChild.run")


@pytest.fixture
def recorded():
    calls.clear()
    yield calls
    calls.clear()


def dirs(path: Path = Path(".")) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


class TestChain:
    def test_ancestor_first_each_once(self, recorded):
        GrandChild().start([])
        assert recorded == [
            "Base.init",
            "Child.init",
            "GrandChild.init",
            "Base.run",
            "Child.run",
            "GrandChild.run",
        ]

    def test_super_calls_do_not_call_twice(self, recorded):
        class Polite(GrandChild):
            def init(self):
                super().init()
                recorded.append("Polite.init")

            def run(self):
                super().run()
                recorded.append("Polite.run")

        Polite().start([])
        assert recorded == [
            "Base.init",
            "Child.init",
            "GrandChild.init",
            "Polite.init",
            "Base.run",
            "Child.run",
            "GrandChild.run",
            "Polite.run",
        ]

    def test_class_without_override_and_diamond(self, recorded):
        class Silent(Base):  # defines neither init nor run
            pass

        class Left(Silent):
            def run(self):
                recorded.append("Left.run")

        class Right(Base):
            def run(self):
                recorded.append("Right.run")

        class Both(Left, Right):
            pass

        Both().start([])
        # Reversed MRO: Engine, Base, Right, Silent, Left, Both.
        assert recorded == ["Base.init", "Base.run", "Right.run", "Left.run"]

    def test_what_init_and_run_see(self, recorded):
        seen = {}

        class Probe(Child):
            def init(self):
                seen["init"] = (self.run_name, self.args, self.result_dir)

            def run(self):
                seen["run"] = (self.run_name, self.args.size, self.result_dir)

        engine = Probe()
        engine.start(["--size", "7"])
        run_name, args, result_dir = seen["init"]
        assert run_name.startswith("Probe_") and args is None and result_dir is None
        assert seen["run"] == (engine.run_name, 7, engine.result_dir)

    def test_a_method_called_outside_start_just_runs(self, recorded):
        engine = GrandChild()
        engine.run()
        assert recorded == ["GrandChild.run"]

    def test_start_twice_is_refused(self, recorded):
        engine = Base()
        engine.start([])
        with pytest.raises(InvalidStateError, match="make a new instance"):
            engine.start([])

    def test_engine_dir_is_the_defining_file_s_directory(self):
        assert Base().engine_dir == str(Path(__file__).resolve().parent)


class TestResultDir:
    def test_default_is_class_name_and_date_in_cwd(self, in_tmp_dir):
        engine = Base()
        engine.start([])
        assert re.fullmatch(r"Base_\d{8}_\d{6}", engine.run_name)
        assert engine.result_dir == str(in_tmp_dir / engine.run_name)
        assert dirs() == [engine.run_name]

    def test_unique_for_runs_in_the_same_second(self, monkeypatch):
        real = engine_module.time.strftime

        def frozen(fmt, *args):
            return "20240102_030405" if fmt == "%Y%m%d_%H%M%S" else real(fmt, *args)

        monkeypatch.setattr(engine_module.time, "strftime", frozen)
        engines = [Base(), Base(), Base()]
        for engine in engines:
            engine.start([])
        names = ["Base_20240102_030405", "Base_20240102_030405_2"]
        names.append("Base_20240102_030405_3")
        assert [e.run_name for e in engines] == names
        assert [os.path.basename(e.result_dir) for e in engines] == names
        assert dirs() == names

    def test_concurrent_creation_gives_distinct_dirs(self, in_tmp_dir):
        barrier = threading.Barrier(8)
        made = []

        def create():
            barrier.wait(timeout=WAIT)
            made.append(engine_module._create_unique_dir(str(in_tmp_dir / "run")))

        threads = [threading.Thread(target=create) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=WAIT)
        assert len(set(made)) == 8
        assert len(dirs()) == 8

    def test_setup_result_dir_override_creates_parents(self, in_tmp_dir):
        class Nested(Base):
            def setup_result_dir(self):
                self.result_dir = os.path.join("results", str(self.args.size))

        class Sized(Child, Nested):
            pass

        engine = Sized()
        engine.start(["--size", "3"])
        assert engine.result_dir == str(in_tmp_dir / "results" / "3")
        assert (in_tmp_dir / "results" / "3").is_dir()

    def test_continue_in_an_existing_dir(self, in_tmp_dir, recorded):
        previous = in_tmp_dir / "previous"
        previous.mkdir()
        engine = Base()
        engine.start(["-c", "previous"])
        assert engine.result_dir == str(previous)
        assert dirs() == ["previous"]
        assert recorded == ["Base.init", "Base.run"]

    def test_continue_in_a_missing_dir_exits_2(self, in_tmp_dir, recorded, capsys):
        with pytest.raises(SystemExit) as exit_info:
            Base().start(["-c", "nowhere"])
        assert exit_info.value.code == 2
        assert "-c nowhere: no such result directory" in capsys.readouterr().err
        assert recorded == ["Base.init"]  # no run
        assert dirs() == []


class TestOptions:
    def test_log_level_by_name_or_number(self):
        Base().start(["-l", "debug"])
        assert logger.level == logging.DEBUG
        Base().start(["-l", "40"])
        assert logger.level == logging.ERROR

    def test_no_log_level_leaves_it(self):
        logger.setLevel(logging.WARNING)
        Base().start([])
        assert logger.level == logging.WARNING

    @pytest.mark.parametrize(
        "argv, message",
        [
            (["-l", "loud"], "unknown log level 'loud'"),
            (["-M"], "-M merges the outputs of -L or -R"),
            (["-L", "-R"], "not allowed with argument"),
            (["--size", "x"], "invalid int value"),
        ],
    )
    def test_bad_arguments_exit_2_before_creating_anything(self, argv, message, capsys):
        with pytest.raises(SystemExit) as exit_info:
            Child().start(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
        assert dirs() == []

    def test_help_lists_engine_and_subclass_options(self, capsys):
        with pytest.raises(SystemExit) as exit_info:
            Child().start(["-h"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "engine Child" in out
        for option in ("-l LEVEL", "-L", "-R", "-M", "-c DIR", "--size"):
            assert option in out
        assert dirs() == []


class Talker(Engine):
    """Writes to stdout, stderr and the logger from its run."""

    def run(self):
        print("out 1")
        print("err 1", file=sys.stderr)
        logger.info("a log record")
        print("out 2")


class TestEngineOutputs:
    def test_redirect(self, capsys):
        engine = Talker()
        engine.start(["-R"])
        result = Path(engine.result_dir)
        assert (result / "stdout.txt").read_text() == "out 1\nout 2\n"
        stderr = (result / "stderr.txt").read_text()
        assert "\nerr 1\n" in stderr and "INFO a log record" in stderr
        assert "INFO command line:" in stderr
        captured = capsys.readouterr()
        assert "out 1" not in captured.out and "err 1" not in captured.err
        assert "redirected to" in captured.err  # said before redirecting

    def test_copy(self, capsys):
        engine = Talker()
        engine.start(["-L"])
        result = Path(engine.result_dir)
        assert (result / "stdout.txt").read_text() == "out 1\nout 2\n"
        assert "a log record" in (result / "stderr.txt").read_text()
        captured = capsys.readouterr()
        assert captured.out == "out 1\nout 2\n"
        assert "err 1" in captured.err and "a log record" in captured.err

    def test_merge_keeps_the_order(self):
        engine = Talker()
        engine.start(["-R", "-M"])
        result = Path(engine.result_dir)
        assert sorted(os.listdir(result)) == ["stdout+stderr.txt"]
        lines = (result / "stdout+stderr.txt").read_text().splitlines()
        start = lines.index("out 1")
        assert "INFO run Talker_" in lines[start - 1]
        assert lines[start + 1] == "err 1"
        assert lines[start + 2].endswith("INFO a log record")
        assert lines[start + 3 :] == ["out 2"]

    def test_continue_appends(self):
        first = Talker()
        first.start(["-R"])
        Talker().start(["-R", "-c", first.result_dir])
        stdout = Path(first.result_dir, "stdout.txt").read_text()
        assert stdout == "out 1\nout 2\n" * 2

    @pytest.mark.parametrize("option", ["-R", "-L"])
    def test_failed_run_restores_and_records_traceback(self, option, capsys):
        class Failing(Talker):
            def run(self):
                raise ZeroDivisionError("boom")

        engine = Failing()
        with pytest.raises(ZeroDivisionError):
            engine.start([option])
        stderr = Path(engine.result_dir, "stderr.txt").read_text()
        assert "Traceback" in stderr and "ZeroDivisionError" in stderr
        # The caller reports the exception; the terminal does not get the
        # traceback a second time from the copy.
        assert "Traceback" not in capsys.readouterr().err


class TestCapture:
    def test_redirect_then_restore(self, capsys):
        stdout = sys.stdout
        with redirect_outputs("out.txt", "err.txt") as capture:
            assert capture.is_active and capture.mode == "redirect"
            print("to out")
            print("to err", file=sys.stderr)
        assert not capture.is_active
        assert sys.stdout is stdout
        assert Path("out.txt").read_text() == "to out\n"
        assert Path("err.txt").read_text() == "to err\n"
        assert capsys.readouterr() == ("", "")

    def test_copy_then_restore(self, capsys):
        with copy_outputs("out.txt", "err.txt"):
            print("to out")
            print("to err", file=sys.stderr)
        assert Path("out.txt").read_text() == "to out\n"
        assert Path("err.txt").read_text() == "to err\n"
        assert capsys.readouterr() == ("to out\n", "to err\n")

    @pytest.mark.parametrize("capture", [redirect_outputs, copy_outputs])
    def test_restored_on_exception(self, capture):
        stdout, stderr = sys.stdout, sys.stderr
        with pytest.raises(KeyError):
            with capture("out.txt", "out.txt"):
                print("before")
                raise KeyError("boom")
        assert sys.stdout is stdout and sys.stderr is stderr
        assert Path("out.txt").read_text() == "before\n"

    def test_function_form_and_restore_twice(self):
        stdout = sys.stdout
        capture = redirect_outputs("out.txt")
        assert sys.stdout is not stdout
        print("kept")
        capture.restore()
        capture.restore()
        assert sys.stdout is stdout
        assert Path("out.txt").read_text() == "kept\n"

    def test_none_leaves_a_stream_alone(self, capsys):
        with redirect_outputs(stderr_filename="err.txt") as capture:
            print("still on stdout")
            print("in the file", file=sys.stderr)
        assert capture.stdout_filename is None
        assert capsys.readouterr().out == "still on stdout\n"
        assert Path("err.txt").read_text() == "in the file\n"

    def test_appends_and_writes_utf8(self):
        Path("out.txt").write_text("old\n", encoding="utf-8")
        with redirect_outputs("out.txt"):
            print("déjà ✓")
        assert Path("out.txt").read_text(encoding="utf-8") == "old\ndéjà ✓\n"

    def test_binary_buffer(self, capsys):
        with copy_outputs("out.txt"):
            print("text", end=" ")
            sys.stdout.buffer.write(b"bytes\n")
        assert Path("out.txt").read_bytes().replace(b"\r\n", b"\n") == b"text bytes\n"
        assert capsys.readouterr().out == "text bytes\n"

    def test_a_kept_reference_outlives_the_capture(self, capsys):
        with copy_outputs("out.txt"):
            kept = sys.stdout
        print("after", file=kept)
        assert capsys.readouterr().out == "after\n"
        assert Path("out.txt").read_text() == ""

    def test_nested_captures(self):
        with redirect_outputs("outer.txt"):
            print("outer 1")
            with copy_outputs("inner.txt"):
                print("both")
            print("outer 2")
        assert Path("outer.txt").read_text() == "outer 1\nboth\nouter 2\n"
        assert Path("inner.txt").read_text() == "both\n"

    def test_unopenable_file_changes_nothing(self, in_tmp_dir):
        stdout, stderr = sys.stdout, sys.stderr
        with pytest.raises(OSError):
            copy_outputs("out.txt", in_tmp_dir / "missing" / "err.txt")
        assert sys.stdout is stdout and sys.stderr is stderr

    def test_bad_file_name_type(self):
        with pytest.raises(TypeError, match="must be a str or a path, got int"):
            redirect_outputs(3)

    def test_each_write_lands_whole(self):
        # One write() per line: print() itself writes the text and the
        # newline in two calls, which threads may interleave anywhere.
        def talk(i):
            for j in range(200):
                sys.stdout.write(f"thread {i} line {j}\n")

        with redirect_outputs("out.txt"):
            threads = [threading.Thread(target=talk, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=WAIT)
        lines = Path("out.txt").read_text().splitlines()
        assert len(lines) == 800
        assert all(re.fullmatch(r"thread \d line \d+", line) for line in lines)


class TestLogger:
    def test_name_and_default_level(self):
        assert logger.name == "alma_dag.engine"
        assert logger.level == logging.INFO

    def test_writes_to_the_current_stderr(self, capsys):
        logger.warning("to the current stderr")
        assert "WARNING to the current stderr" in capsys.readouterr().err
        with redirect_outputs(stderr_filename="err.txt"):
            logger.warning("to the file")
        assert "WARNING to the file" in Path("err.txt").read_text()


@pytest.mark.parametrize(
    "value, slug",
    [
        ("Hello, World!", "hello-world"),
        ({"solver": "heft", "size": 100}, "solver-heft-size-100"),
        ("  Déjà   vu -- again ", "deja-vu-again"),
        ("a/b\\c:d*e?f", "abcdef"),
        ("snake_case_name", "snake_case_name"),
        ("-leading and trailing_", "leading-and-trailing"),
        (3.25, "325"),
        ("日本", "_"),
        ("", "_"),
        ("NUL", "nul_"),
        ("com1", "com1_"),
        ("console", "console"),
    ],
)
def test_slugify(value, slug):
    assert slugify(value) == slug


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


class TestExample:
    def test_help(self, in_tmp_dir):
        done = _run([str(EXAMPLE), "-h"], in_tmp_dir)
        assert done.returncode == 0, done.stderr
        assert "engine SweepEngine" in done.stdout and "--scale" in done.stdout
        assert dirs() == []

    def test_runs_then_continues(self, in_tmp_dir):
        done = _run([str(EXAMPLE), "-L"], in_tmp_dir)
        assert done.returncode == 0, done.stderr
        (run_name,) = dirs()
        assert re.fullmatch(r"SweepEngine_\d{8}_\d{6}", run_name)
        result = in_tmp_dir / run_name
        assert len(list(result.glob("*.json"))) == 9
        assert (result / "results.csv").read_text().startswith("method,terms")
        assert (result / "stdout.txt").read_text() == done.stdout
        assert len(done.stdout.splitlines()) == 9

        again = _run([str(EXAMPLE), "-c", run_name], in_tmp_dir)
        assert again.returncode == 0, again.stderr
        assert again.stderr.count("done already") == 9
        assert dirs() == [run_name]


def test_redirect_catches_subprocess_output(in_tmp_dir):
    """With -R the descriptors 1 and 2 go to the files too, so what a
    subprocess writes lands there; the terminal stays quiet."""
    script = in_tmp_dir / "spawner.py"
    script.write_text(
        textwrap.dedent(
            """
            import subprocess, sys
            from alma_dag.engine import Engine

            class Spawner(Engine):
                def run(self):
                    print("from python")
                    sys.stdout.flush()
                    subprocess.run([sys.executable, "-c", "print('from child')"])
                    subprocess.run(
                        [sys.executable, "-c",
                         "import sys; print('child err', file=sys.stderr)"]
                    )

            Spawner().start()
            print("after the run")
            """
        )
    )
    done = _run([str(script), "-R"], in_tmp_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "after the run\n"
    assert "child err" not in done.stderr
    (run_name,) = dirs()
    result = in_tmp_dir / run_name
    assert (result / "stdout.txt").read_text() == "from python\nfrom child\n"
    assert "child err" in (result / "stderr.txt").read_text()
