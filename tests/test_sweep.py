"""Tests for alma_dag.sweep: sweep, HashableDict, geom, igeom, sweep_stats.

execo_engine's two documented ``sweep`` examples are reproduced as sets,
and in the order alma_dag documents (declaration order, first factor
slowest). Each place where alma_dag chose differently from execo_engine
(a string is one level, a factor without levels empties the sweep, igeom
never gives more than n values, sweep_stats fills in zero counts) has its
own test, named after the choice.
"""

from __future__ import annotations

import itertools
import math
import pickle
import pprint
from collections import UserList

import cloudpickle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alma_dag.errors import DefinitionError
from alma_dag.sweep import HashableDict, geom, igeom, sweep, sweep_stats

# No example database in the work tree, and no deadline: tests assert
# behaviour, never time.
PROPERTY = settings(
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)

EXAMPLE_1 = {"param 1": ["a", "b"], "param 2": [1, 2]}

EXAMPLE_2 = {
    "param 1": ["a", "b"],
    "param 2": {
        1: {"param 1 1": ["x", "y"], "param 1 2": [0.0, 1.0]},
        2: {"param 2 1": [-10, 10]},
    },
}

# execo_engine's documented output for EXAMPLE_2, verbatim (its order and
# key order came from Python 2's dict order).
EXECO_OUTPUT_2 = [
    {"param 1 2": 0.0, "param 1 1": "x", "param 1": "a", "param 2": 1},
    {"param 1 2": 0.0, "param 1 1": "y", "param 1": "a", "param 2": 1},
    {"param 1 2": 1.0, "param 1 1": "x", "param 1": "a", "param 2": 1},
    {"param 1 2": 1.0, "param 1 1": "y", "param 1": "a", "param 2": 1},
    {"param 2 1": -10, "param 1": "a", "param 2": 2},
    {"param 2 1": 10, "param 1": "a", "param 2": 2},
    {"param 1 2": 0.0, "param 1 1": "x", "param 1": "b", "param 2": 1},
    {"param 1 2": 0.0, "param 1 1": "y", "param 1": "b", "param 2": 1},
    {"param 1 2": 1.0, "param 1 1": "x", "param 1": "b", "param 2": 1},
    {"param 1 2": 1.0, "param 1 1": "y", "param 1": "b", "param 2": 1},
    {"param 2 1": -10, "param 1": "b", "param 2": 2},
    {"param 2 1": 10, "param 1": "b", "param 2": 2},
]


def as_items(combinations):
    """Each combination as its list of items, so key order is compared too."""
    return [list(combination.items()) for combination in combinations]


def assert_valid_sweep(combinations, factors):
    """The invariants of any flat sweep: HashableDicts, all distinct, each
    holding exactly ``factors`` as keys, in that order."""
    assert all(type(c) is HashableDict for c in combinations)
    assert len(set(combinations)) == len(combinations)
    assert all(list(c) == list(factors) for c in combinations)


class TestSweep:
    def test_first_documented_example_exactly(self):
        assert as_items(sweep(EXAMPLE_1)) == [
            [("param 1", "a"), ("param 2", 1)],
            [("param 1", "a"), ("param 2", 2)],
            [("param 1", "b"), ("param 2", 1)],
            [("param 1", "b"), ("param 2", 2)],
        ]

    def test_second_documented_example_as_a_set(self):
        combinations = sweep(EXAMPLE_2)
        assert len(combinations) == len(EXECO_OUTPUT_2) == 12
        assert set(combinations) == {HashableDict(c) for c in EXECO_OUTPUT_2}

    def test_second_documented_example_in_documented_order(self):
        """Outer factors in declaration order, first slowest; under a level,
        the sub-sweep's combinations in their own declaration order; keys
        with each sub-factor right after its factor."""
        expected = []
        for p1 in ["a", "b"]:
            for x, y in itertools.product(["x", "y"], [0.0, 1.0]):
                expected.append(
                    [
                        ("param 1", p1),
                        ("param 2", 1),
                        ("param 1 1", x),
                        ("param 1 2", y),
                    ]
                )
            for z in [-10, 10]:
                expected.append([("param 1", p1), ("param 2", 2), ("param 2 1", z)])
        assert as_items(sweep(EXAMPLE_2)) == expected

    def test_first_factor_varies_slowest(self):
        parameters = {"a": [1, 2, 3], "b": ["x", "y"], "c": [True, False]}
        expected = [
            dict(zip(parameters, values, strict=True))
            for values in itertools.product(*parameters.values())
        ]
        assert sweep(parameters) == expected
        assert_valid_sweep(sweep(parameters), parameters)

    def test_later_factor_crosses_each_sub_combination(self):
        """The module docstring's tree::

        solver = heft ─┬─ lookahead = 1 ─┬─ size = 10
                       │                 └─ size = 100
                       └─ lookahead = 2 ─┬─ size = 10
                                         └─ size = 100
        solver = random ─────────────────┬─ size = 10
                                         └─ size = 100
        """
        parameters = {
            "solver": {"heft": {"lookahead": [1, 2]}, "random": {}},
            "size": [10, 100],
        }
        assert as_items(sweep(parameters)) == [
            [("solver", "heft"), ("lookahead", 1), ("size", 10)],
            [("solver", "heft"), ("lookahead", 1), ("size", 100)],
            [("solver", "heft"), ("lookahead", 2), ("size", 10)],
            [("solver", "heft"), ("lookahead", 2), ("size", 100)],
            [("solver", "random"), ("size", 10)],
            [("solver", "random"), ("size", 100)],
        ]

    def test_nested_sweeps_recurse(self):
        parameters = {
            "backend": {
                "loky": {
                    "workers": [2, 4],
                    "start": {"spawn": {"preload": [True, False]}, "fork": {}},
                },
                "inline": {},
            }
        }
        assert sweep(parameters) == [
            {"backend": "loky", "workers": 2, "start": "spawn", "preload": True},
            {"backend": "loky", "workers": 2, "start": "spawn", "preload": False},
            {"backend": "loky", "workers": 2, "start": "fork"},
            {"backend": "loky", "workers": 4, "start": "spawn", "preload": True},
            {"backend": "loky", "workers": 4, "start": "spawn", "preload": False},
            {"backend": "loky", "workers": 4, "start": "fork"},
            {"backend": "inline"},
        ]

    def test_sibling_levels_may_reuse_sub_factor_names(self):
        parameters = {"solver": {"a": {"k": [1]}, "b": {"k": [2, 3]}}}
        assert sweep(parameters) == [
            {"solver": "a", "k": 1},
            {"solver": "b", "k": 2},
            {"solver": "b", "k": 3},
        ]

    @pytest.mark.parametrize("level", ["mnist", "", b"raw", 42, 1.5, None])
    def test_string_bytes_or_scalar_is_a_single_level(self, level):
        """execo iterated a string per character; here it is one level."""
        assert sweep({"dataset": level, "seed": [0, 1]}) == [
            {"dataset": level, "seed": 0},
            {"dataset": level, "seed": 1},
        ]

    def test_ordered_iterables_are_levels(self):
        values = {"k": 1, "m": 2}
        parameters = {
            "tuple": (1, 2),
            "range": range(3, 5),
            "generator": (n for n in [5, 6]),
            "values": values.values(),
            "keys": values.keys(),
        }
        combinations = sweep(parameters)
        assert len(combinations) == 32
        assert combinations[0] == {
            "tuple": 1,
            "range": 3,
            "generator": 5,
            "values": 1,
            "keys": "k",
        }
        assert combinations[-1] == {
            "tuple": 2,
            "range": 4,
            "generator": 6,
            "values": 2,
            "keys": "m",
        }

    @pytest.mark.parametrize("empty", [[], (), range(0), {}])
    def test_a_factor_without_levels_empties_the_sweep(self, empty):
        """A full factorial with a factor at no level has no combination;
        execo dropped the factor instead."""
        assert sweep({"a": [1, 2], "b": empty, "c": [3]}) == []

    def test_an_empty_sub_factor_removes_only_its_level(self):
        parameters = {"solver": {"heft": {"lookahead": []}, "random": {}}}
        assert sweep(parameters) == [{"solver": "random"}]

    def test_no_factor_is_one_empty_combination(self):
        assert sweep({}) == [{}]
        assert type(sweep({})[0]) is HashableDict

    def test_unhashable_levels_give_hashable_combinations(self):
        combinations = sweep({"shape": [[2, 3], {"h": 4}], "mode": ["a"]})
        assert combinations == [
            {"shape": [2, 3], "mode": "a"},
            {"shape": {"h": 4}, "mode": "a"},
        ]
        assert len({c: None for c in combinations}) == 2

    def test_a_list_and_the_equal_looking_tuple_are_distinct_levels(self):
        assert sweep({"shape": [[1], (1,)]}) == [{"shape": [1]}, {"shape": (1,)}]

    def test_any_hashable_factor_name(self):
        assert sweep({1: ["a"], ("x", 2): [None]}) == [{1: "a", ("x", 2): None}]

    def test_combinations_are_independent_dicts(self):
        combinations = sweep({"a": [1, 2], "b": {"x": {"c": [3]}}})
        combinations[0]["a"] = 99
        assert combinations[1] == {"a": 2, "b": "x", "c": 3}
        assert len({id(c) for c in combinations}) == len(combinations)

    def test_is_deterministic(self):
        assert as_items(sweep(EXAMPLE_2)) == as_items(sweep(EXAMPLE_2))

    @pytest.mark.parametrize("parameters", [["a", "b"], None, "a", [("a", [1])]])
    def test_parameters_must_be_a_dict(self, parameters):
        with pytest.raises(DefinitionError, match="must be a dict of factor -> levels"):
            sweep(parameters)

    def test_sub_parameters_must_be_a_dict(self):
        with pytest.raises(DefinitionError) as info:
            sweep({"a": [1], "solver": {"heft": [1, 2]}})
        assert isinstance(info.value, ValueError)
        assert info.value.field == "solver"
        message = str(info.value)
        assert "factor 'solver'" in message
        assert "level 'heft'" in message
        assert "{'heft': {}}" in message

    def test_deep_error_says_where(self):
        with pytest.raises(DefinitionError) as info:
            sweep({"solver": {"heft": {"k": {1: {"depth": {2, 3}}}}}})
        assert info.value.field == "depth"
        assert "factor 'depth' under 'solver' = 'heft' under 'k' = 1" in str(info.value)

    @pytest.mark.parametrize("levels", [{1, 2}, frozenset({"a"})])
    def test_set_of_levels_is_refused(self, levels):
        """A set's order changes from run to run, so would the sweep's."""
        with pytest.raises(DefinitionError, match="levels must be ordered") as info:
            sweep({"x": levels})
        assert info.value.field == "x"

    @pytest.mark.parametrize("levels", [[1, 2, 1], [1, 1.0], ["a", "a"], [[1], [1]]])
    def test_level_listed_twice_is_refused(self, levels):
        with pytest.raises(DefinitionError, match="listed twice") as info:
            sweep({"x": levels})
        assert info.value.field == "x"

    def test_unhashable_level_is_refused(self):
        class Opaque:
            __hash__ = None

        with pytest.raises(DefinitionError, match="unhashable") as info:
            sweep({"x": [Opaque()]})
        assert info.value.field == "x"

    @pytest.mark.parametrize(
        "parameters",
        [
            {"k": [1], "solver": {"heft": {"k": [2]}}},
            {"solver": {"heft": {"k": [2]}}, "k": [1]},
            {"solver": {"heft": {"solver": [2]}}},
            {"a": {1: {"b": {2: {"a": [3]}}}}},
        ],
    )
    def test_sub_factor_reusing_an_outer_name_is_refused(self, parameters):
        """execo let the inner level overwrite the outer one."""
        with pytest.raises(DefinitionError, match="also declared outside it"):
            sweep(parameters)


@st.composite
def flat_parameters(draw):
    names = draw(st.lists(st.text(max_size=4), min_size=1, max_size=4, unique=True))
    level = st.integers(-5, 5) | st.text(max_size=2)
    return {
        name: draw(st.lists(level, max_size=4, unique_by=lambda v: (type(v), v)))
        for name in names
    }


@PROPERTY
@given(flat_parameters())
def test_flat_sweep_is_the_full_factorial(parameters):
    combinations = sweep(parameters)
    assert len(combinations) == math.prod(len(levels) for levels in parameters.values())
    assert_valid_sweep(combinations, parameters)
    assert combinations == [
        dict(zip(parameters, values, strict=True))
        for values in itertools.product(*parameters.values())
    ]


@st.composite
def nested_parameters(draw, prefix="", depth=2):
    """Factor names carry their path, so no sub-factor reuses an outer name."""
    parameters = {}
    for i in range(draw(st.integers(0, 3))):
        name = f"{prefix}{i}"
        if depth and draw(st.booleans()):
            parameters[name] = {
                level: draw(nested_parameters(f"{name}.{level}.", depth - 1))
                for level in range(draw(st.integers(0, 3)))
            }
        else:
            parameters[name] = list(range(draw(st.integers(0, 3))))
    return parameters


def expected_count(parameters):
    return math.prod(
        sum(expected_count(sub) for sub in levels.values())
        if isinstance(levels, dict)
        else len(levels)
        for levels in parameters.values()
    )


@PROPERTY
@given(nested_parameters())
def test_nested_sweep_counts_and_distinct(parameters):
    combinations = sweep(parameters)
    assert len(combinations) == expected_count(parameters)
    assert len(set(combinations)) == len(combinations)
    for combination in combinations:
        top = [key for key in combination if "." not in key]
        assert top == list(parameters)


class TestHashableDict:
    def test_equal_items_hash_equal_whatever_the_order(self):
        a = HashableDict({"x": 1, "y": "b"})
        b = HashableDict({"y": "b", "x": 1})
        assert a == b
        assert hash(a) == hash(b)

    def test_equals_a_plain_dict(self):
        assert HashableDict({"x": 1}) == {"x": 1}
        assert {"x": 1} == HashableDict({"x": 1})
        assert HashableDict({"x": 1}) != {"x": 2}
        assert isinstance(HashableDict(), dict)

    def test_is_a_dict_key_and_a_set_member(self):
        results = {HashableDict({"x": 1, "y": 2}): "first"}
        assert results[HashableDict({"y": 2, "x": 1})] == "first"
        members = {HashableDict({"x": 1}), HashableDict({"x": 1}), HashableDict()}
        assert len(members) == 2
        assert HashableDict() in members

    @pytest.mark.parametrize(
        "value, equal",
        [
            ([1, [2, 3]], [1, [2, 3]]),
            ({"a": [1], "b": {"c": 2}}, {"b": {"c": 2}, "a": [1]}),
            ({"a": 1}, HashableDict({"a": 1})),
            ({1, 2}, frozenset({2, 1})),
            (bytearray(b"ab"), b"ab"),
            ((1, [2]), (1, [2])),
            (UserList([1, 2]), [1, 2]),
        ],
    )
    def test_nested_unhashable_values_hash_through_equal_values(self, value, equal):
        a, b = HashableDict({"k": value}), HashableDict({"k": equal})
        assert a == b
        assert hash(a) == hash(b)
        assert {a: 1}[b] == 1

    def test_different_nested_values_are_different_keys(self):
        keys = {
            HashableDict({"k": [1, 2]}): 1,
            HashableDict({"k": [2, 1]}): 2,
            HashableDict({"k": (1, 2)}): 3,
        }
        assert len(keys) == 3

    def test_an_unhashable_value_raises_type_error_naming_the_key(self):
        class Opaque:
            __hash__ = None

        with pytest.raises(TypeError, match="the value of 'bad' is unhashable"):
            hash(HashableDict({"ok": 1, "bad": [Opaque()]}))

    def test_repr_is_a_dicts(self):
        combination = HashableDict({"x": 1, "y": [2]})
        assert repr(combination) == "{'x': 1, 'y': [2]}"
        assert pprint.pformat(combination, width=10) == pprint.pformat(
            {"x": 1, "y": [2]}, width=10
        )

    @pytest.mark.parametrize(
        "dumps, loads",
        [(pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)],
        ids=["pickle", "cloudpickle"],
    )
    def test_pickle_round_trip(self, dumps, loads):
        combination = HashableDict({"x": 1, "nested": {"y": [2, 3]}})
        back = loads(dumps(combination))
        assert type(back) is HashableDict
        assert back == combination
        assert hash(back) == hash(combination)

    def test_sweep_output_pickles_as_a_whole(self):
        combinations = sweep(EXAMPLE_2)
        back = pickle.loads(pickle.dumps(combinations))
        assert back == combinations
        assert set(back) == set(combinations)

    def test_copy_and_union_stay_hashable(self):
        combination = HashableDict({"x": 1})
        assert type(combination.copy()) is HashableDict
        assert combination.copy() is not combination
        merged = combination | {"y": 2}
        assert type(merged) is HashableDict
        assert merged == {"x": 1, "y": 2}
        assert type({"y": 2} | combination) is HashableDict
        assert list({"y": 2, "x": 0} | combination) == ["y", "x"]
        assert ({"y": 2, "x": 0} | combination)["x"] == 1

    def test_stays_mutable(self):
        """As in execo; the docstring says not to mutate a key in use."""
        combination = HashableDict({"x": 1})
        before = hash(combination)
        combination["x"] = 2
        combination |= {"y": 3}
        assert combination == {"x": 2, "y": 3}
        assert hash(combination) != before


class TestGeom:
    @pytest.mark.parametrize(
        "x, y, n, expected",
        [
            (1, 1000, 4, [1.0, 10.0, 100.0, 1000.0]),
            (1, 1024, 11, [float(2**i) for i in range(11)]),
            (3, 48, 5, [3.0, 6.0, 12.0, 24.0, 48.0]),
            (0.001, 1, 4, [0.001, 0.01, 0.1, 1.0]),
            (1, 1e6, 7, [10.0**i for i in range(7)]),
        ],
    )
    def test_doubling_and_decades_are_exact(self, x, y, n, expected):
        assert geom(x, y, n) == expected

    def test_constant_ratio_and_exact_ends(self):
        values = geom(3, 7, 6)
        assert values[0] == 3.0 and values[-1] == 7.0
        assert all(type(v) is float for v in values)
        ratios = [b / a for a, b in itertools.pairwise(values)]
        assert ratios == pytest.approx([(7 / 3) ** (1 / 5)] * 5)

    def test_one_value_is_x(self):
        assert geom(5, 50, 1) == [5.0]

    def test_x_equal_y_repeats_x(self):
        assert geom(2, 2, 3) == [2.0, 2.0, 2.0]

    def test_decreasing_when_y_is_smaller(self):
        assert geom(100, 1, 3) == [100.0, 10.0, 1.0]
        assert geom(48, 3, 5) == [48.0, 24.0, 12.0, 6.0, 3.0]

    @pytest.mark.parametrize("n", [0, -1, 1.5, True, "3", None])
    def test_n_must_be_a_positive_integer(self, n):
        with pytest.raises(
            DefinitionError, match="n must be a positive integer"
        ) as info:
            geom(1, 10, n)
        assert info.value.field == "n"

    @pytest.mark.parametrize(
        "x, y, field",
        [
            (0, 10, "x"),
            (-1, 10, "x"),
            (1, 0, "y"),
            (1, -5.0, "y"),
            (math.nan, 10, "x"),
            (1, math.inf, "y"),
            ("1", 10, "x"),
            (True, 10, "x"),
            (1, 10**400, "y"),
        ],
    )
    def test_bounds_must_be_positive_finite_numbers(self, x, y, field):
        with pytest.raises(DefinitionError, match="positive finite number") as info:
            geom(x, y, 3)
        assert info.value.field == field


class TestIgeom:
    def test_documented_values(self):
        assert igeom(1, 1000, 4) == [1, 10, 100, 1000]
        assert igeom(64, 1, 4) == [64, 16, 4, 1]

    def test_repeats_are_dropped(self):
        assert igeom(1, 10, 10) == [1, 2, 3, 4, 5, 6, 8, 10]
        assert all(type(v) is int for v in igeom(1, 10, 10))

    @pytest.mark.parametrize("x", [1, 2, 7])
    @pytest.mark.parametrize("y", [1, 3, 50, 1000])
    @pytest.mark.parametrize("n", [1, 2, 3, 10, 40])
    def test_at_most_n_distinct_monotonic_values_with_both_ends(self, x, y, n):
        """execo's igeom could give more than n values; this one never does."""
        values = igeom(x, y, n)
        assert len(values) <= n
        assert len(set(values)) == len(values)
        assert values[0] == x
        if n > 1:
            assert values[-1] == y
        assert values == sorted(values, reverse=x > y)

    def test_one_value_is_x(self):
        assert igeom(5, 50, 1) == [5]

    def test_x_equal_y_is_one_value(self):
        assert igeom(4, 4, 5) == [4]

    def test_large_ends_are_kept_exactly(self):
        big = 10**20 + 1
        assert igeom(1, big, 3) == [1, 10**10, big]

    def test_whole_floats_are_accepted(self):
        assert igeom(1, 1e3, 4) == [1, 10, 100, 1000]
        assert all(type(v) is int for v in igeom(1.0, 1e3, 4))

    @pytest.mark.parametrize("x, y, field", [(1.5, 10, "x"), (1, 9.9, "y")])
    def test_bounds_must_be_whole(self, x, y, field):
        with pytest.raises(DefinitionError, match="whole number") as info:
            igeom(x, y, 3)
        assert info.value.field == field

    @pytest.mark.parametrize("x, y, n", [(0, 10, 3), (1, -10, 3), (1, 10, 0)])
    def test_invalid_arguments(self, x, y, n):
        with pytest.raises(DefinitionError):
            igeom(x, y, n)


def stats_of(total, **states):
    stats = {
        "total": total,
        "remaining": [],
        "skipped": [],
        "inprogress": [],
        "done": [],
    }
    stats.update(states)
    return stats


class TestSweepStats:
    def test_counts_and_ratios_per_factor_and_level(self):
        total = sweep({"n": [1, 2], "solver": ["heft", "random"]})
        # n=1: heft done, random skipped; n=2: heft in progress, random remains
        stats = sweep_stats(
            stats_of(
                total,
                done=[total[0]],
                skipped=[total[1]],
                inprogress=[total[2]],
                remaining=[total[3]],
            )
        )
        assert list(stats) == [
            "total",
            "remaining",
            "remaining_ratio",
            "skipped",
            "skipped_ratio",
            "inprogress",
            "inprogress_ratio",
            "done",
            "done_ratio",
        ]
        assert stats["total"] == {"n": {1: 2, 2: 2}, "solver": {"heft": 2, "random": 2}}
        assert stats["done"] == {"n": {1: 1, 2: 0}, "solver": {"heft": 1, "random": 0}}
        assert stats["skipped"] == {
            "n": {1: 1, 2: 0},
            "solver": {"heft": 0, "random": 1},
        }
        assert stats["inprogress"] == {
            "n": {1: 0, 2: 1},
            "solver": {"heft": 1, "random": 0},
        }
        assert stats["remaining"] == {
            "n": {1: 0, 2: 1},
            "solver": {"heft": 0, "random": 1},
        }
        assert stats["done_ratio"] == {
            "n": {1: 0.5, 2: 0.0},
            "solver": {"heft": 0.5, "random": 0.0},
        }
        for state in ("remaining", "skipped", "inprogress", "done"):
            for factor, levels in stats[f"{state}_ratio"].items():
                for level, ratio in levels.items():
                    assert ratio == stats[state][factor][level] / 2

    def test_zero_counts_are_filled_in(self):
        """execo left out of a state's counts the levels it had none of."""
        total = sweep({"x": [1, 2, 3]})
        stats = sweep_stats(stats_of(total, remaining=total))
        assert stats["done"] == {"x": {1: 0, 2: 0, 3: 0}}
        assert stats["done_ratio"] == {"x": {1: 0.0, 2: 0.0, 3: 0.0}}
        assert stats["remaining_ratio"] == {"x": {1: 1.0, 2: 1.0, 3: 1.0}}

    def test_nested_factors_count_only_where_they_appear(self):
        total = sweep(EXAMPLE_2)
        done = [c for c in total if c.get("param 1 1") == "x"]
        stats = sweep_stats(stats_of(total, done=done))
        assert stats["total"]["param 2"] == {1: 8, 2: 4}
        assert stats["total"]["param 1 1"] == {"x": 4, "y": 4}
        assert stats["total"]["param 2 1"] == {-10: 2, 10: 2}
        assert stats["done"]["param 2"] == {1: 4, 2: 0}
        assert stats["done_ratio"]["param 2"] == {1: 0.5, 2: 0.0}
        assert stats["done_ratio"]["param 1 1"] == {"x": 1.0, "y": 0.0}
        assert stats["done_ratio"]["param 2 1"] == {-10: 0.0, 10: 0.0}

    def test_order_follows_total(self):
        total = sweep({"b": [3, 1, 2], "a": ["z", "y"]})
        stats = sweep_stats(stats_of(total))
        assert list(stats["done"]) == ["b", "a"]
        assert list(stats["done"]["b"]) == [3, 1, 2]

    def test_accepts_sets_and_plain_dicts(self):
        """What a ParamSweeper keeps: sets of HashableDicts, or any dicts."""
        total = [{"x": 1}, {"x": 2}]
        stats = sweep_stats(
            {
                "total": iter(total),
                "remaining": set(),
                "skipped": frozenset(),
                "inprogress": (),
                "done": {HashableDict({"x": 2})},
            }
        )
        assert stats["done"] == {"x": {1: 0, 2: 1}}

    def test_unhashable_level_is_keyed_by_its_stand_in(self):
        total = sweep({"shape": [[2, 3], [4]]})
        stats = sweep_stats(stats_of(total, done=[total[0]]))
        assert stats["done"] == {"shape": {(2, 3): 1, (4,): 0}}

    def test_empty_sweep(self):
        assert sweep_stats(stats_of([]))["done"] == {}

    def test_missing_key(self):
        with pytest.raises(DefinitionError, match="miss 'skipped', 'done'") as info:
            sweep_stats({"total": [], "remaining": [], "inprogress": []})
        assert info.value.field == "skipped"

    def test_not_a_dict(self):
        with pytest.raises(DefinitionError, match="must be a dict"):
            sweep_stats(([], [], [], [], []))

    def test_combination_not_in_total(self):
        with pytest.raises(DefinitionError, match="not among 'total'") as info:
            sweep_stats(stats_of([{"x": 1}], done=[{"x": 3}]))
        assert info.value.field == "done"

    def test_combination_not_a_dict(self):
        with pytest.raises(DefinitionError, match="not a combination") as info:
            sweep_stats(stats_of([{"x": 1}], skipped=[("x", 1)]))
        assert info.value.field == "skipped"

    def test_unhashable_combination(self):
        class Opaque:
            __hash__ = None

        with pytest.raises(DefinitionError, match="'bad' is unhashable") as info:
            sweep_stats(stats_of([{"bad": Opaque()}]))
        assert info.value.field == "total"
