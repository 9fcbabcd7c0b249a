"""Parameter sweeps: every combination of an experiment's parameters.

In: a dict of *factors* (parameter names) to their *levels* (the values to
try), as in execo_engine. A factor's levels are a list, or a dict of
level -> sub-parameters: a nested sweep whose factors are explored only
for that level. Out: the full factorial design, a list of
``HashableDict`` combinations, so a combination can be a dict key or a set
member (a ``ParamSweeper`` keeps its states in sets)::

    sweep({"solver": {"heft": {"lookahead": [1, 2]}, "random": {}},
           "size": [10, 100]})

    solver = heft ─┬─ lookahead = 1 ─┬─ size = 10      1st combination
                   │                 └─ size = 100     2nd
                   └─ lookahead = 2 ─┬─ size = 10      3rd
                                     └─ size = 100     4th
    solver = random ─────────────────┬─ size = 10      5th
                                     └─ size = 100     6th

Invariants of the result:

- the order is the declaration order, the first factor varying slowest
  (the odometer order of ``itertools.product``); the combinations under
  one level of a nested factor follow the sub-sweep's own order;
- every combination is distinct, and holds one level for each factor on
  its path (the top-level factors and the sub-factors of the levels it
  took), keyed by the factor's name, in declaration order;
- everything is checked before the first combination is built; invalid
  parameters raise ``DefinitionError`` naming the factor.

Policy, where execo_engine's ``sweep`` surprises:

- a string, bytes or any non-iterable value given as a factor's levels is
  that factor's *single* level, not a sequence of one-character levels;
- a factor with no level (``[]`` or ``{}``) leaves no combination at all,
  as in any full factorial; execo silently dropped the factor instead;
- a set of levels is refused: its order changes from run to run;
- a level listed twice, and a sub-factor that reuses a name from outside
  it, are refused: both would give duplicate or overwritten combinations.

``geom`` and ``igeom`` make levels that grow geometrically, and
``sweep_stats`` summarises, per factor and level, how far a sweep has got.
"""

from __future__ import annotations

import math
import operator
from collections.abc import (
    Hashable,
    ItemsView,
    Iterable,
    KeysView,
    Mapping,
    Sequence,
)
from collections.abc import Set as AbstractSet
from typing import Any

from .errors import DefinitionError

__all__ = ["HashableDict", "geom", "igeom", "sweep", "sweep_stats"]

#: The states of a combination in a ParamSweeper, in execo's report order.
_STATES = ("remaining", "skipped", "inprogress", "done")


class HashableDict(dict):
    """A dict that can be a dict key or a set member: one sweep combination.

    It equals any dict with the same items, and hashes the set of its
    items. Unhashable values are hashed through an equal-hashing stand-in,
    recursively: a list or tuple as the tuple of its elements, a dict as
    the set of its items, a set as a frozenset.

    It stays a mutable dict, as in execo_engine, but it must not be
    modified while it is a dict key or a set member: its hash would change
    and the container would no longer find it.

    Examples
    --------
    >>> combination = HashableDict({"threads": 4, "sizes": [10, 100]})
    >>> results = {combination: 12.5}
    >>> results[HashableDict({"sizes": [10, 100], "threads": 4})]
    12.5
    >>> combination == {"threads": 4, "sizes": [10, 100]}
    True
    >>> combination | {"seed": 1}
    {'threads': 4, 'sizes': [10, 100], 'seed': 1}
    """

    __slots__ = ()

    def __hash__(self) -> int:
        items = []
        for key, value in self.items():
            try:
                items.append((key, _freeze(value)))
            except TypeError:
                raise TypeError(
                    f"HashableDict: the value of {key!r} is unhashable: "
                    f"{type(value).__name__} {value!r}"
                ) from None
        return hash(frozenset(items))

    # dict's own: it prints as a dict, and pprint lays it out as one.
    __repr__ = dict.__repr__

    def copy(self) -> HashableDict:
        """A shallow copy, itself a ``HashableDict``."""
        return type(self)(self)

    # dict's | would return a plain dict, which is not hashable.
    def __or__(self, other: Any) -> Any:
        if not isinstance(other, dict):
            return NotImplemented
        new = type(self)(self)
        new.update(other)
        return new

    def __ror__(self, other: Any) -> Any:
        if not isinstance(other, dict):
            return NotImplemented
        new = type(self)(other)
        new.update(self)
        return new


def _freeze(value: Any) -> Hashable:
    """``value`` if hashable, else a hashable stand-in that hashes equal
    for equal values; TypeError if there is none."""
    try:
        hash(value)
    except TypeError:
        pass
    else:
        return value
    if isinstance(value, Mapping):
        return frozenset((key, _freeze(item)) for key, item in value.items())
    if isinstance(value, AbstractSet):  # its elements are hashable already
        return frozenset(value)
    if isinstance(value, bytearray):  # equals bytes, so must hash like bytes
        return bytes(value)
    if isinstance(value, Sequence):
        return tuple(_freeze(item) for item in value)
    raise TypeError(f"unhashable type: {type(value).__name__!r}")


# A parsed parameters dict: (factor, ((level, sub-tree), ...)) in
# declaration order; a plain level's sub-tree is the empty tree ().
_Tree = tuple[tuple[Hashable, tuple[tuple[Any, "_Tree"], ...]], ...]


def sweep(parameters: Mapping[Hashable, Any]) -> list[HashableDict]:
    """Every combination of the parameters' levels: a full factorial design.

    Parameters
    ----------
    parameters : dict
        Factor name -> levels. Factor names are any hashable values. The
        levels are one of:

        - a list, tuple, range or other ordered iterable of levels;
        - a dict of level -> sub-parameters: each level's sub-parameters
          (a dict of the same form, possibly empty) are swept only in the
          combinations that take that level;
        - anything else, including a string or bytes: one single level.
          Write ``[(2, 3)]`` for a single tuple level and ``[{"a": 1}]``
          for a single dict level.

    Returns
    -------
    list of HashableDict
        The combinations, first factor varying slowest; under one level of
        a nested factor, its sub-sweep's combinations in their own order.
        Each maps the factors on its path to one of their levels. A factor
        without levels makes the list empty; ``sweep({})`` is ``[{}]``,
        the one combination of no factor.

    Raises
    ------
    DefinitionError
        If ``parameters`` or a level's sub-parameters is not a dict, a
        factor's levels are a set, a level is listed twice or cannot be
        hashed, or a sub-factor reuses the name of a factor outside it.
        ``field`` names the factor (``"parameters"`` for a value that is
        not a dict at all).

    Examples
    --------
    The first factor varies slowest:

    >>> for combination in sweep({"param 1": ["a", "b"], "param 2": [1, 2]}):
    ...     print(combination)
    {'param 1': 'a', 'param 2': 1}
    {'param 1': 'a', 'param 2': 2}
    {'param 1': 'b', 'param 2': 1}
    {'param 1': 'b', 'param 2': 2}

    A dict of levels sweeps each level's sub-parameters only with it:

    >>> for combination in sweep({
    ...     "param 1": ["a", "b"],
    ...     "param 2": {
    ...         1: {"param 1 1": ["x", "y"], "param 1 2": [0.0, 1.0]},
    ...         2: {"param 2 1": [-10, 10]},
    ...     },
    ... }):
    ...     print(combination)
    {'param 1': 'a', 'param 2': 1, 'param 1 1': 'x', 'param 1 2': 0.0}
    {'param 1': 'a', 'param 2': 1, 'param 1 1': 'x', 'param 1 2': 1.0}
    {'param 1': 'a', 'param 2': 1, 'param 1 1': 'y', 'param 1 2': 0.0}
    {'param 1': 'a', 'param 2': 1, 'param 1 1': 'y', 'param 1 2': 1.0}
    {'param 1': 'a', 'param 2': 2, 'param 2 1': -10}
    {'param 1': 'a', 'param 2': 2, 'param 2 1': 10}
    {'param 1': 'b', 'param 2': 1, 'param 1 1': 'x', 'param 1 2': 0.0}
    {'param 1': 'b', 'param 2': 1, 'param 1 1': 'x', 'param 1 2': 1.0}
    {'param 1': 'b', 'param 2': 1, 'param 1 1': 'y', 'param 1 2': 0.0}
    {'param 1': 'b', 'param 2': 1, 'param 1 1': 'y', 'param 1 2': 1.0}
    {'param 1': 'b', 'param 2': 2, 'param 2 1': -10}
    {'param 1': 'b', 'param 2': 2, 'param 2 1': 10}

    A string is one level, and a factor with no level leaves nothing to run:

    >>> sweep({"dataset": "mnist", "seed": range(2)})
    [{'dataset': 'mnist', 'seed': 0}, {'dataset': 'mnist', 'seed': 1}]
    >>> sweep({"dataset": "mnist", "seed": []})
    []
    """
    return [HashableDict(combination) for combination in _expand(_parse(parameters))]


def _parse(parameters: Any, outside: frozenset = frozenset(), where: str = "") -> _Tree:
    """Check ``parameters`` and return its tree; ``outside`` holds the
    factor names declared around it, ``where`` says where it is."""
    if not isinstance(parameters, Mapping):
        raise DefinitionError(
            f"sweep parameters{where} must be a dict of factor -> levels, "
            f"got {type(parameters).__name__} {parameters!r}",
            field="parameters",
        )
    for factor in parameters:
        if factor in outside:
            raise DefinitionError(
                f"factor {factor!r}{where} is also declared outside it; a "
                "combination holds one level per factor, so give it another name",
                field=str(factor),
            )
    scope = outside | frozenset(parameters)
    return tuple(
        (factor, _parse_levels(factor, levels, scope, where))
        for factor, levels in parameters.items()
    )


def _parse_levels(
    factor: Hashable, levels: Any, scope: frozenset, where: str
) -> tuple[tuple[Any, _Tree], ...]:
    if isinstance(levels, Mapping):
        for level, sub in levels.items():
            if not isinstance(sub, Mapping):
                raise DefinitionError(
                    f"factor {factor!r}{where}: the sub-parameters of level "
                    f"{level!r} must be a dict of factor -> levels, got "
                    f"{type(sub).__name__} {sub!r}; write {{{level!r}: {{}}}} for "
                    "a level without sub-factors, or give plain levels as a list",
                    field=str(factor),
                )
        return tuple(
            (level, _parse(sub, scope, f"{where} under {factor!r} = {level!r}"))
            for level, sub in levels.items()
        )
    # A dict's keys and items views are sets, but ordered as their dict is.
    if isinstance(levels, AbstractSet) and not isinstance(
        levels, (KeysView, ItemsView)
    ):
        raise DefinitionError(
            f"factor {factor!r}{where}: levels must be ordered, got a "
            f"{type(levels).__name__}; give them as a list, e.g. sorted(...)",
            field=str(factor),
        )
    if isinstance(levels, (str, bytes, bytearray)) or not isinstance(levels, Iterable):
        levels = [levels]
    levels = list(levels)
    _check_distinct(factor, levels, where)
    return tuple((level, ()) for level in levels)


def _check_distinct(factor: Hashable, levels: list, where: str) -> None:
    # Bucketed by stand-in, then compared: [1] and (1,) share a stand-in
    # but are distinct levels.
    seen: dict[Hashable, list] = {}
    for level in levels:
        try:
            equals = seen.setdefault(_freeze(level), [])
        except TypeError:
            raise DefinitionError(
                f"factor {factor!r}{where}: level {level!r} is unhashable, so "
                "its combinations could not be dict keys; use numbers, "
                "strings, tuples, lists or dicts of them",
                field=str(factor),
            ) from None
        if any(other is level or other == level for other in equals):
            raise DefinitionError(
                f"factor {factor!r}{where}: level {level!r} is listed twice, "
                "which would give the same combinations twice",
                field=str(factor),
            )
        equals.append(level)


def _expand(tree: _Tree) -> list[dict]:
    combinations: list[dict] = [{}]
    for factor, levels in tree:
        # Each level's sub-sweep is expanded once, not once per prefix.
        options = [
            {factor: level, **sub}
            for level, subtree in levels
            for sub in _expand(subtree)
        ]
        combinations = [
            {**prefix, **option} for prefix in combinations for option in options
        ]
    return combinations


def geom(x: float, y: float, n: int) -> list[float]:
    """``n`` numbers in geometric progression from ``x`` to ``y``, both
    included.

    Parameters
    ----------
    x, y : float
        The first and last values, both positive. ``y`` may be smaller than
        ``x``: the progression then decreases.
    n : int
        How many values, at least 1; ``n == 1`` gives ``[x]``.

    Returns
    -------
    list of float
        ``x * (y / x) ** (i / (n - 1))`` for ``i`` in ``range(n)``. The ends
        are exactly ``x`` and ``y``, and progressions whose terms are powers
        of two or of ten times ``x`` are exact throughout.

    Raises
    ------
    DefinitionError
        If ``x`` or ``y`` is not a positive finite number, or ``n`` is not
        a positive integer.

    Examples
    --------
    >>> geom(1, 1000, 4)
    [1.0, 10.0, 100.0, 1000.0]
    >>> geom(3, 48, 5)
    [3.0, 6.0, 12.0, 24.0, 48.0]
    >>> geom(100, 1, 3)
    [100.0, 10.0, 1.0]
    """
    _check_bound("x", x)
    _check_bound("y", y)
    n = _check_count(n)
    if n == 1:
        return [float(x)]
    ratio = y / x
    # In base 2 when y / x is a power of two and in base 10 otherwise, so
    # that the common doubling and decade sweeps have no rounding error.
    base, exponent = 2.0, math.log2(ratio)
    if not exponent.is_integer():
        base, exponent = 10.0, math.log10(ratio)
    inner = [x * base ** (exponent * i / (n - 1)) for i in range(1, n - 1)]
    return [float(x), *inner, float(y)]


def igeom(x: int, y: int, n: int) -> list[int]:
    """At most ``n`` distinct integers in geometric progression from ``x``
    to ``y``, both included.

    The terms of ``geom(x, y, n)`` are rounded to the nearest integer and
    the repeats dropped, so a progression that starts slowly gives fewer
    than ``n`` values. Unlike execo_engine's ``igeom``, it never gives
    more than ``n`` values, and it keeps the progression's direction:
    ascending when ``x < y``, descending when ``x > y``.

    Parameters
    ----------
    x, y : int
        The first and last values, positive whole numbers (``1e6`` is
        accepted).
    n : int
        The most values to give, at least 1; ``n == 1`` gives ``[x]``.

    Returns
    -------
    list of int

    Raises
    ------
    DefinitionError
        If ``x`` or ``y`` is not a positive whole number, or ``n`` is not
        a positive integer.

    Examples
    --------
    >>> igeom(1, 1000, 4)
    [1, 10, 100, 1000]
    >>> igeom(1, 10, 10)
    [1, 2, 3, 4, 5, 6, 8, 10]
    >>> igeom(64, 1, 4)
    [64, 16, 4, 1]
    """
    x = _check_whole("x", x)
    y = _check_whole("y", y)
    terms = geom(x, y, n)
    if len(terms) == 1:
        return [x]
    # The ends as given: a float loses the last digits of a large int.
    values = [x, *(round(term) for term in terms[1:-1]), y]
    return list(dict.fromkeys(values))


def _check_bound(name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        ok = ok and math.isfinite(value) and value > 0
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok:
        raise DefinitionError(
            f"{name} must be a positive finite number, got {value!r}", field=name
        )


def _check_whole(name: str, value: Any) -> int:
    _check_bound(name, value)
    if isinstance(value, float) and not value.is_integer():
        raise DefinitionError(
            f"{name} must be a positive whole number, got {value!r}", field=name
        )
    return int(value)


def _check_count(n: Any) -> int:
    try:
        count = operator.index(n)
    except TypeError:
        count = 0
    if isinstance(n, bool) or count < 1:
        raise DefinitionError(
            f"n must be a positive integer (how many values), got {n!r}", field="n"
        )
    return count


def sweep_stats(stats: Mapping[str, Iterable[Mapping]]) -> dict[str, dict]:
    """How far a sweep has got, per factor and level: execo's counts and
    ratios of remaining, skipped, in-progress and done combinations.

    Parameters
    ----------
    stats : dict
        What a ``ParamSweeper``'s ``stats()`` returns: ``"total"``, every
        combination of the sweep (execo's ``sweeps``), and ``"remaining"``,
        ``"skipped"``, ``"inprogress"`` and ``"done"``, the combinations in
        each state. Each is an iterable of combinations, dicts as made by
        ``sweep``; each state's combinations must be among ``"total"``'s.

    Returns
    -------
    dict
        ``"total"`` and each state map factor -> level -> the number of
        combinations (of the sweep, or in that state) with that factor at
        that level; ``"<state>_ratio"`` maps factor -> level -> that
        number over the total's, a float in [0, 1]. Every factor and level
        of ``"total"`` appears in every entry, with 0 where no combination
        is in that state (execo left those out of the counts). Factors and
        levels are in the order ``"total"`` first gives them; an
        unhashable level is keyed by its hashable stand-in, a list by the
        equal tuple.

    Raises
    ------
    DefinitionError
        If a key is missing, a combination is not a dict or cannot be
        hashed, or a state holds a combination that is not in ``"total"``.

    Examples
    --------
    >>> combinations = sweep({"n": [1, 2], "solver": ["heft", "random"]})
    >>> stats = sweep_stats({
    ...     "total": combinations,
    ...     "done": combinations[:3],
    ...     "inprogress": combinations[3:],
    ...     "remaining": [],
    ...     "skipped": [],
    ... })
    >>> stats["done"]
    {'n': {1: 2, 2: 1}, 'solver': {'heft': 2, 'random': 1}}
    >>> stats["done_ratio"]["n"]
    {1: 1.0, 2: 0.5}
    >>> stats["remaining"]["solver"]
    {'heft': 0, 'random': 0}
    """
    if not isinstance(stats, Mapping):
        raise DefinitionError(
            f"sweep stats must be a dict, got {type(stats).__name__}", field="stats"
        )
    missing = [key for key in ("total", *_STATES) if key not in stats]
    if missing:
        raise DefinitionError(
            f"sweep stats miss {', '.join(map(repr, missing))}; a ParamSweeper's "
            "stats() gives 'total', 'remaining', 'skipped', 'inprogress', 'done'",
            field=missing[0],
        )
    total = _combinations(stats, "total")
    known = set(total)
    states = {state: _combinations(stats, state) for state in _STATES}
    for state, combinations in states.items():
        for combination in combinations:
            if combination not in known:
                raise DefinitionError(
                    f"sweep stats: {state!r} holds {combination!r}, which is not "
                    "among 'total''s combinations",
                    field=state,
                )
    totals = _count(total, {})
    result: dict[str, dict] = {"total": totals}
    for state, combinations in states.items():
        counts = _count(combinations, totals)
        result[state] = counts
        result[f"{state}_ratio"] = {
            factor: {level: n / totals[factor][level] for level, n in levels.items()}
            for factor, levels in counts.items()
        }
    return result


def _combinations(stats: Mapping, state: str) -> list[HashableDict]:
    """The combinations of ``stats[state]``, as checked HashableDicts."""
    combinations = []
    for combination in stats[state]:
        if not isinstance(combination, Mapping):
            raise DefinitionError(
                f"sweep stats: {state!r} holds {combination!r}, which is not a "
                "combination (a dict of factor -> level)",
                field=state,
            )
        combination = HashableDict(combination)
        try:
            hash(combination)
        except TypeError as exc:
            raise DefinitionError(
                f"sweep stats: {state!r}: {exc}", field=state
            ) from None
        combinations.append(combination)
    return combinations


def _count(combinations: list[HashableDict], totals: dict) -> dict:
    """Factor -> level -> how many of ``combinations`` have it, starting
    from a zero for each factor and level of ``totals``."""
    counts = {factor: dict.fromkeys(levels, 0) for factor, levels in totals.items()}
    for combination in combinations:
        for factor, level in combination.items():
            levels = counts.setdefault(factor, {})
            level = _freeze(level)
            levels[level] = levels.get(level, 0) + 1
    return counts
