"""The public API: what ``alma_dag`` exports, documents and imports.

``alma_dag/__init__.py`` is the one import path shown in docs and examples,
so every name of its ``__all__`` must import from there and carry a
docstring, as must the public methods of the classes among them. Every
module with public names declares ``__all__``. ``import alma_dag`` stays
light: the heavy optional packages load only when asked for.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import alma_dag

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent

#: Packages that ``import alma_dag`` must not import.
HEAVY = ("matplotlib", "distributed", "dask")


def _module_names() -> list[str]:
    names = ["alma_dag"]
    names += [m.name for m in pkgutil.walk_packages(alma_dag.__path__, "alma_dag.")]
    return sorted(names)


def _public_members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties of ``cls``, as found on the class
    (data fields, enum members and class constants are left out)."""
    members = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        static = inspect.getattr_static(cls, name)
        if isinstance(static, (staticmethod, classmethod)):
            members.append((name, static.__func__))
        elif isinstance(static, property) or inspect.isroutine(static):
            members.append((name, static))
    return members


def _has_doc(obj: object, owner: type | None = None, name: str = "") -> bool:
    if isinstance(obj, property):
        return bool(obj.__doc__ and obj.__doc__.strip())
    if owner is not None:
        # Overriding methods may reuse the docstring of the method they
        # override; inspect.getdoc looks it up along the MRO.
        return bool(inspect.getdoc(getattr(owner, name)))
    return bool(inspect.getdoc(obj))


def test_all_is_sorted_and_unique():
    assert len(set(alma_dag.__all__)) == len(alma_dag.__all__)
    assert list(alma_dag.__all__) == sorted(alma_dag.__all__)


@pytest.mark.parametrize("name", alma_dag.__all__)
def test_exported_name_imports_and_is_documented(name: str):
    namespace: dict = {}
    exec(f"from alma_dag import {name} as obj", namespace)
    obj = namespace["obj"]
    assert obj is getattr(alma_dag, name)
    assert _has_doc(obj), f"alma_dag.{name} has no docstring"
    if inspect.isclass(obj):
        missing = [
            member
            for member, value in _public_members(obj)
            if not _has_doc(value, obj, member)
        ]
        assert not missing, f"alma_dag.{name}: no docstring on {missing}"


@pytest.mark.parametrize("module_name", _module_names())
def test_module_declares_all(module_name: str):
    module = importlib.import_module(module_name)
    defined_here = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module_name
    ]
    if not defined_here and not hasattr(module, "__all__"):
        return  # no public names of its own
    assert hasattr(module, "__all__"), (
        f"{module_name} defines public names {defined_here} but no __all__"
    )
    names = list(module.__all__)
    assert len(set(names)) == len(names), f"{module_name}.__all__ repeats names"
    missing = [name for name in names if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ lists missing names {missing}"


def test_import_does_not_load_heavy_packages():
    code = (
        "import json, sys\n"
        "import alma_dag\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(json.dumps(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"import alma_dag loaded {loaded}"


def test_version_matches_pyproject():
    with open(ROOT / "pyproject.toml", "rb") as file:
        project = tomllib.load(file)["project"]
    assert alma_dag.__version__ == project["version"]
