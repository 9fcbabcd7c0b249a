"""Tests for alma_dag.graph: Dependency, extract/resolve, TaskGraph, validation
and ampeg's helpers (remove_duplicates, prefix, to_dot).

Graphs are small dicts in ampeg's format ``{node: (function, args, cost)}``
unless the test is about the builder API. ``run_graph`` runs a graph in the
calling thread so that tests can check what a graph computes, not only its
shape.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

import cloudpickle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alma_dag.errors import CycleError, DefinitionError
from alma_dag.graph import (
    Dependency,
    Task,
    TaskGraph,
    extract,
    find_dependencies,
    map_dependencies,
    prefix,
    remove_duplicates,
    resolve,
    to_dot,
)

# No example database in the work tree, and no deadline: tests assert
# behaviour, never time.
PROPERTY = settings(
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)

Point = collections.namedtuple("Point", "x y")


def run_graph(graph):
    """Run every task in the calling thread, in topological order."""
    graph = TaskGraph.from_dict(graph)
    results = {}
    for node in graph.topological_order():
        task = graph.task(node)
        args = resolve(task.args, results)
        kwargs = resolve(task.kwargs, results)
        results[node] = task.function(*args, **kwargs)
    return results


def edge_costs(graph):
    return {(u, v): cost for u, v, cost in graph.nx.edges(data="cost")}


def assert_cycle_of(graph, cycle, nodes):
    """``cycle`` goes around exactly ``nodes`` along dependency edges."""
    assert cycle[0] == cycle[-1]
    assert len(cycle) == len(nodes) + 1
    assert set(cycle) == set(nodes)
    for u, v in zip(cycle, cycle[1:], strict=False):
        assert graph.nx.has_edge(u, v), (u, v)


# -- Dependency ----------------------------------------------------------------


class TestDependency:
    def test_defaults(self):
        dep = Dependency("t")
        assert (dep.task, dep.key, dep.cost) == ("t", None, 0.0)

    def test_positional_fields_as_in_ampeg(self):
        dep = Dependency("t", ("values", 2), 1.5)
        assert (dep.task, dep.key, dep.cost) == ("t", ("values", 2), 1.5)

    def test_ampeg_aliases(self):
        dep = Dependency(("run", 3), "x", 2.0)
        assert dep.task_id == ("run", 3)
        assert dep.communication_cost == 2.0

    def test_is_frozen(self):
        dep = Dependency("t")
        with pytest.raises(dataclasses.FrozenInstanceError):
            dep.task = "u"

    def test_getitem_builds_a_path(self):
        assert Dependency("t")["a"][0] == Dependency("t", ("a", 0))

    def test_getitem_extends_a_single_key(self):
        assert Dependency("t", "a")[0] == Dependency("t", ("a", 0))

    def test_getitem_extends_a_list_path(self):
        assert Dependency("t", ["a", 0])["b"] == Dependency("t", ("a", 0, "b"))

    def test_getitem_keeps_cost_and_leaves_the_original(self):
        dep = Dependency("t", None, 3.0)
        part = dep["a"]
        assert part.cost == 3.0
        assert dep.key is None

    def test_getitem_slice(self):
        assert Dependency("t")[1:3].key == (slice(1, 3),)

    def test_built_path_extracts(self):
        value = {"a": [10, {"b": "deep"}]}
        assert extract(value, Dependency("t")["a"][1]["b"].key) == "deep"

    def test_unhashable_task_is_a_definition_error(self):
        with pytest.raises(DefinitionError, match=r"\['x'\].*hashable"):
            Dependency(["x"])

    def test_survives_cloudpickle(self):
        dep = Dependency(("run", 1), ("values", slice(0, 2)), 0.5)
        assert cloudpickle.loads(cloudpickle.dumps(dep)) == dep


# -- extract -------------------------------------------------------------------


class WithProperty:
    @property
    def area(self):
        return 6


class WithClassAttribute:
    kind = "circle"


class WithInstanceAttribute:
    def __init__(self):
        self.size = 3


class TestExtract:
    def test_none_gives_the_whole_value(self):
        value = {"a": 1}
        assert extract(value, None) is value

    def test_key_path(self):
        assert extract({"values": [1, 3, 5]}, ("values", 2)) == 5

    def test_list_path(self):
        assert extract({"values": [1, 3, 5]}, ["values", 2]) == 5

    def test_empty_path_gives_the_value(self):
        value = [1]
        assert extract(value, ()) is value

    def test_single_key(self):
        assert extract({"a": 1, "b": 2}, "b") == 2

    def test_single_index(self):
        assert extract([1, 3, 5], -1) == 5

    def test_slice(self):
        assert extract([0, 1, 2, 3], slice(1, 3)) == [1, 2]

    def test_slice_in_a_path(self):
        assert extract({"v": "abcdef"}, ("v", slice(None, None, 2))) == "ace"

    def test_non_string_dict_key(self):
        assert extract({1: "one", (2, 3): "pair"}, 1) == "one"

    def test_string_key_falls_back_to_a_property(self):
        assert extract(WithProperty(), "area") == 6

    def test_string_key_falls_back_to_a_class_attribute(self):
        assert extract(WithClassAttribute(), "kind") == "circle"

    def test_string_key_falls_back_to_a_namedtuple_field(self):
        assert extract(Point(1, 2), "y") == 2
        assert extract(Point(1, 2), 0) == 1

    def test_string_key_falls_back_to_an_instance_attribute(self):
        assert extract(WithInstanceAttribute(), "size") == 3

    def test_attribute_inside_a_path(self):
        assert extract({"p": Point(1, [7, 8])}, ("p", "y", 1)) == 8

    def test_a_key_wins_over_an_attribute(self):
        assert extract({"items": 1}, "items") == 1

    def test_missing_key_raises_the_original_key_error(self):
        with pytest.raises(KeyError) as info:
            extract({"a": 1}, "b")
        assert info.value.args == ("b",)

    def test_missing_non_string_key_raises_key_error(self):
        with pytest.raises(KeyError):
            extract({"a": 1}, 0)

    def test_missing_index_raises_index_error(self):
        with pytest.raises(IndexError):
            extract([1, 2], 5)

    def test_missing_step_in_a_path_raises(self):
        with pytest.raises(IndexError):
            extract({"a": [1]}, ("a", 3))

    def test_missing_attribute_raises_the_original_type_error(self):
        with pytest.raises(TypeError, match="not subscriptable"):
            extract(WithInstanceAttribute(), "missing")

    def test_index_into_an_unsubscriptable_value_raises_type_error(self):
        with pytest.raises(TypeError):
            extract(42, 0)


# -- find_dependencies, map_dependencies, resolve ------------------------------


class TestFindDependencies:
    def test_finds_every_dependency_in_order(self):
        a, b, c = Dependency("a"), Dependency("b", "k"), Dependency("c")
        obj = (1, [a, {"x": b, "y": (2, Point(c, 3))}], a)
        assert list(find_dependencies(obj)) == [a, b, c, a]

    def test_dependency_itself(self):
        dep = Dependency("a")
        assert list(find_dependencies(dep)) == [dep]

    def test_none_in_plain_values(self):
        assert list(find_dependencies((1, "a", [None, {"k": 2.0}]))) == []


class TestMapDependencies:
    def test_applies_the_function_to_each_dependency(self):
        obj = [Dependency("a"), (Dependency("b"),), {"k": Dependency("c")}]
        mapped = map_dependencies(obj, lambda dep: dep.task.upper())
        assert mapped == ["A", ("B",), {"k": "C"}]

    def test_identity_function_returns_the_same_object(self):
        obj = [Dependency("a"), {"k": (Dependency("b"),)}]
        assert map_dependencies(obj, lambda dep: dep) is obj

    def test_original_is_not_modified(self):
        inner = [Dependency("a")]
        obj = {"k": inner}
        map_dependencies(obj, lambda dep: 1)
        assert obj == {"k": [Dependency("a")]}


class CustomList(list):
    pass


class TestResolve:
    RESULTS = {"a": {"values": [1, 3, 5]}, "b": "bee", ("t", 1): 10}

    def test_whole_result(self):
        assert resolve(Dependency("b"), self.RESULTS) == "bee"

    def test_key_path(self):
        assert resolve(Dependency("a", ("values", 2)), self.RESULTS) == 5

    def test_tuple_node_id(self):
        assert resolve([Dependency(("t", 1))], self.RESULTS) == [10]

    def test_nested_in_lists_tuples_and_dicts(self):
        obj = [1, (Dependency("b"), {"x": [Dependency("a", ("values", 0))]})]
        assert resolve(obj, self.RESULTS) == [1, ("bee", {"x": [1]})]

    def test_container_types_are_preserved(self):
        obj = (Dependency("b"), [Dependency("b")], {"k": Dependency("b")})
        out = resolve(obj, self.RESULTS)
        assert type(out) is tuple
        assert type(out[1]) is list
        assert type(out[2]) is dict

    def test_namedtuple_is_preserved(self):
        out = resolve(Point(Dependency("b"), 2), self.RESULTS)
        assert type(out) is Point
        assert out == Point("bee", 2)

    def test_ordered_dict_is_preserved(self):
        obj = collections.OrderedDict([("z", Dependency("b")), ("a", 1)])
        out = resolve(obj, self.RESULTS)
        assert type(out) is collections.OrderedDict
        assert list(out.items()) == [("z", "bee"), ("a", 1)]

    def test_defaultdict_keeps_its_factory(self):
        obj = collections.defaultdict(list, {"k": Dependency("b")})
        out = resolve(obj, self.RESULTS)
        assert type(out) is collections.defaultdict
        assert out.default_factory is list
        assert out == {"k": "bee"}

    def test_list_subclass_is_preserved(self):
        out = resolve(CustomList([Dependency("b")]), self.RESULTS)
        assert type(out) is CustomList
        assert out == ["bee"]

    def test_containers_without_dependencies_are_the_same_object(self):
        inner_list, inner_dict, inner_tuple = [1, 2], {"k": [3]}, (4, Point(5, 6))
        obj = [inner_list, inner_dict, inner_tuple, Dependency("b")]
        out = resolve(obj, self.RESULTS)
        assert out[0] is inner_list
        assert out[1] is inner_dict
        assert out[2] is inner_tuple
        assert resolve(inner_dict, self.RESULTS) is inner_dict

    def test_missing_result_raises_key_error(self):
        with pytest.raises(KeyError):
            resolve([Dependency("zz")], self.RESULTS)

    def test_missing_key_in_a_result_raises_the_original_error(self):
        with pytest.raises(IndexError):
            resolve([Dependency("a", ("values", 9))], self.RESULTS)


RESOLVE_RESULTS = {i: {"values": [10 * i, 10 * i + 1]} for i in range(3)}


def _leaf_pairs():
    """(object, what it resolves to) for plain values and Dependencies."""
    plain = st.one_of(st.integers(), st.text(max_size=3), st.none(), st.booleans())
    return st.one_of(
        plain.map(lambda v: (v, v)),
        st.integers(0, 2).map(lambda i: (Dependency(i), RESOLVE_RESULTS[i])),
        st.tuples(st.integers(0, 2), st.integers(0, 1)).map(
            lambda p: (Dependency(p[0], ("values", p[1])), 10 * p[0] + p[1])
        ),
    )


def _container_pairs(children):
    def unzip(pairs, kind):
        return kind(a for a, _ in pairs), kind(b for _, b in pairs)

    return st.one_of(
        st.lists(children, max_size=4).map(lambda ps: unzip(ps, list)),
        st.lists(children, max_size=4).map(lambda ps: unzip(ps, tuple)),
        st.tuples(children, children).map(lambda ps: unzip(ps, Point._make)),
        st.dictionaries(st.text(max_size=2), children, max_size=4).map(
            lambda d: (
                {k: a for k, (a, _) in d.items()},
                {k: b for k, (_, b) in d.items()},
            )
        ),
    )


NESTED_PAIRS = st.recursive(_leaf_pairs(), _container_pairs, max_leaves=25)


def assert_resolved(original, actual, expected):
    """``actual`` equals ``expected`` with the same container types, and
    every part of ``original`` without Dependencies is shared, not copied."""
    if isinstance(original, Dependency):
        assert type(actual) is type(expected)
        assert actual == expected
        return
    if not list(find_dependencies(original)):
        assert actual is original
    assert type(actual) is type(expected)
    if isinstance(expected, dict):
        assert list(actual) == list(expected)
        for k in expected:
            assert_resolved(original[k], actual[k], expected[k])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for o, a, e in zip(original, actual, expected, strict=True):
            assert_resolved(o, a, e)
    else:
        assert actual == expected


class TestResolveProperties:
    @PROPERTY
    @given(NESTED_PAIRS)
    def test_values_land_where_the_dependencies_were(self, pair):
        original, expected = pair
        actual = resolve(original, RESOLVE_RESULTS)
        assert_resolved(original, actual, expected)
        assert list(find_dependencies(actual)) == []


# -- Task ----------------------------------------------------------------------


class TestTask:
    def test_dependencies_are_derived_once_each_in_order(self):
        task = Task(
            max,
            (Dependency("b"), [Dependency("a"), Dependency("b", "k")]),
            {"key": Dependency("c")},
        )
        assert task.dependencies == ("b", "a", "c")

    def test_no_dependencies(self):
        assert Task(abs, (-1,)).dependencies == ()

    def test_defaults(self):
        task = Task(abs)
        assert (task.args, task.kwargs, task.cost) == ((), {}, 1.0)
        assert (task.memory, task.retries, task.timeout) == (0.0, 0, None)

    def test_dependencies_cannot_be_given(self):
        with pytest.raises(TypeError):
            Task(abs, (), {}, 1.0, 0.0, 0, None, (), ("a",))

    def test_travels_with_cloudpickle(self):
        offset = 5
        task = Task(lambda x: x + offset, (Dependency("a"),), cost=2.0)
        copy = cloudpickle.loads(cloudpickle.dumps(task))
        assert copy.function(1) == 6
        assert copy.dependencies == ("a",)


# -- TaskGraph: building -------------------------------------------------------


class TestTaskGraphAdd:
    def test_returns_a_dependency_on_the_new_task(self):
        g = TaskGraph()
        assert g.add("a", abs, (-1,)) == Dependency("a")

    def test_returned_dependency_makes_an_edge(self):
        g = TaskGraph()
        a = g.add("a", pow, (3, 2), cost=2)
        g.add("b", lambda x, y: x + y, (a, 1))
        assert edge_costs(g) == {("a", "b"): 0.0}
        assert g.task("b").dependencies == ("a",)
        assert run_graph(g) == {"a": 9, "b": 10}

    def test_list_args_become_a_tuple(self):
        g = TaskGraph()
        g.add("a", max, [1, 2])
        assert g.task("a").args == (1, 2)

    def test_kwargs_and_their_dependencies(self):
        g = TaskGraph()
        g.add("a", lambda: {"v": [4, 5]})
        g.add(
            "b", lambda *, x, y: x * y, kwargs={"x": Dependency("a", ("v", 1)), "y": 2}
        )
        assert g.task("b").dependencies == ("a",)
        assert run_graph(g)["b"] == 10

    def test_kwargs_are_copied(self):
        kwargs = {"x": 1}
        g = TaskGraph()
        g.add("a", dict, kwargs=kwargs)
        kwargs["x"] = 2
        assert g.task("a").kwargs == {"x": 1}

    def test_hints_are_stored(self):
        g = TaskGraph()
        g.add("a", abs, (1,), cost=2.5, memory=512, retries=3, timeout=10)
        task = g.task("a")
        assert (task.cost, task.memory, task.retries, task.timeout) == (2.5, 512, 3, 10)

    def test_edge_cost_is_the_largest_of_several_dependencies(self):
        g = TaskGraph()
        g.add("a", lambda: {"x": 1, "y": 2})
        g.add(
            "b",
            lambda p, q, r: (p, q, r),
            (Dependency("a", "x", 2), [Dependency("a", "y", 5)]),
            {"r": Dependency("a", None, 3)},
        )
        assert edge_costs(g) == {("a", "b"): 5}
        assert g.task("b").dependencies == ("a",)

    def test_edge_cost_when_the_dependency_is_added_later(self):
        g = TaskGraph()
        g.add("b", max, (Dependency("a", None, 1), Dependency("a", None, 4)))
        g.add("a", lambda: 7)
        g.validate()
        assert edge_costs(g) == {("a", "b"): 4}

    def test_lambdas_and_closures(self):
        scale = 3

        def make_adder(n):
            return lambda x: x + n

        g = TaskGraph()
        a = g.add("a", lambda: scale)
        b = g.add("b", make_adder(10), (a,))
        g.add("c", lambda x, y: x * y, (a, b))
        assert run_graph(g) == {"a": 3, "b": 13, "c": 39}

    def test_any_hashable_node_id(self):
        g = TaskGraph()
        g.add(("run", 1), abs, (-1,))
        g.add(7, abs, (Dependency(("run", 1)),))
        g.add(frozenset({"x"}), abs, (Dependency(7),))
        assert g.topological_order() == [("run", 1), 7, frozenset({"x"})]

    def test_duplicate_node_id(self):
        g = TaskGraph()
        g.add("a", abs, (1,))
        with pytest.raises(DefinitionError, match=r"task 'a' is defined twice"):
            g.add("a", abs, (2,))
        assert g.task("a").args == (1,)

    def test_unhashable_node_id(self):
        g = TaskGraph()
        with pytest.raises(
            DefinitionError, match=r"node id \['a'\] is not hashable"
        ) as info:
            g.add(["a"], abs, (1,))
        assert info.value.field == "node"
        assert len(g) == 0

    def test_non_callable_function_names_the_task(self):
        g = TaskGraph()
        with pytest.raises(
            DefinitionError, match=r"task 'a': function must be callable, got int 3"
        ) as info:
            g.add("a", 3, (1,))
        assert info.value.field == "function"

    @pytest.mark.parametrize(
        "cost",
        [
            -1,
            -0.5,
            math.nan,
            math.inf,
            True,
            False,
            "1",
            None,
            pytest.param(10**400, id="int-too-large-for-a-float"),
        ],
    )
    def test_invalid_cost(self, cost):
        g = TaskGraph()
        with pytest.raises(
            DefinitionError, match=r"task 'a': cost must be a non-negative number"
        ) as info:
            g.add("a", abs, (1,), cost=cost)
        assert info.value.field == "cost"
        assert "a" not in g

    def test_zero_cost_is_valid(self):
        g = TaskGraph()
        g.add("a", abs, (1,), cost=0)
        assert g.task("a").cost == 0

    @pytest.mark.parametrize("memory", [-1, math.nan, True])
    def test_invalid_memory(self, memory):
        with pytest.raises(DefinitionError, match=r"task 'a': memory"):
            TaskGraph().add("a", abs, (1,), memory=memory)

    @pytest.mark.parametrize("retries", [-1, 1.5, True, "2"])
    def test_invalid_retries(self, retries):
        with pytest.raises(
            DefinitionError, match=r"task 'a': retries must be a non-negative integer"
        ) as info:
            TaskGraph().add("a", abs, (1,), retries=retries)
        assert info.value.field == "retries"

    @pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, True])
    def test_invalid_timeout(self, timeout):
        with pytest.raises(
            DefinitionError, match=r"task 'a': timeout must be a positive number"
        ):
            TaskGraph().add("a", abs, (1,), timeout=timeout)

    @pytest.mark.parametrize("cost", [-1, math.nan, True])
    def test_invalid_dependency_cost(self, cost):
        g = TaskGraph()
        g.add("a", abs, (1,))
        with pytest.raises(DefinitionError, match=r"task 'b': dependency cost"):
            g.add("b", abs, ([Dependency("a", None, cost)],))

    def test_kwargs_need_string_keys(self):
        with pytest.raises(DefinitionError, match=r"task 'a': kwargs must be a dict"):
            TaskGraph().add("a", dict, kwargs={1: 2})

    def test_args_must_be_a_tuple(self):
        with pytest.raises(DefinitionError, match=r"task 'a': args must be a tuple"):
            TaskGraph().add_task("a", Task(abs, -1))

    def test_a_failed_add_leaves_no_trace(self):
        g = TaskGraph()
        with pytest.raises(DefinitionError):
            g.add("b", abs, (Dependency("a"),), cost=-1)
        assert len(g) == 0
        assert g.nx.number_of_nodes() == 0


class TestFromDict:
    def test_ampeg_readme_example(self):
        graph = {
            0: (lambda x: x**2, 3, 10.8),
            1: (lambda x: x**2, 4, 10.8),
            2: (lambda x: x / 2, 10, 11),
            3: (
                lambda x, y: x + y,
                (Dependency(0, None, 1), Dependency(1, None, 1)),
                10.7,
            ),
            4: (
                lambda x, y: x * y,
                (Dependency(0, None, 1), Dependency(2, None, 1)),
                10.8,
            ),
            5: (
                lambda x, y: x - y,
                (Dependency(3, None, 1), Dependency(4, None, 1)),
                10.9,
            ),
        }
        assert run_graph(graph) == {0: 9, 1: 16, 2: 5, 3: 25, 4: 45, 5: -20}
        g = TaskGraph.from_dict(graph)
        assert g.task(5).cost == 10.9
        assert edge_costs(g) == {
            (0, 3): 1,
            (1, 3): 1,
            (0, 4): 1,
            (2, 4): 1,
            (3, 5): 1,
            (4, 5): 1,
        }

    def test_single_argument(self):
        g = TaskGraph.from_dict({"a": (abs, -3, 1)})
        assert g.task("a").args == (-3,)
        assert run_graph(g) == {"a": 3}

    def test_single_dependency_argument(self):
        g = TaskGraph.from_dict({"a": (abs, -3, 1), "b": (abs, Dependency("a"), 1)})
        assert g.task("b").args == (Dependency("a"),)
        assert list(g.dependencies("b")) == ["a"]

    def test_single_namedtuple_argument(self):
        g = TaskGraph.from_dict({"a": (lambda p: p.x + p.y, Point(1, 2), 1)})
        assert g.task("a").args == (Point(1, 2),)
        assert run_graph(g) == {"a": 3}

    @pytest.mark.parametrize("args", [(2, 5), [2, 5]], ids=["tuple", "list"])
    def test_positional_arguments(self, args):
        g = TaskGraph.from_dict({"a": (pow, args, 1)})
        assert g.task("a").args == (2, 5)
        assert run_graph(g) == {"a": 32}

    def test_keyword_arguments(self):
        g = TaskGraph.from_dict({"a": (lambda *, x, y: x - y, {"x": 5, "y": 2}, 1)})
        assert (g.task("a").args, g.task("a").kwargs) == ((), {"x": 5, "y": 2})
        assert run_graph(g) == {"a": 3}

    def test_wrapped_lone_list(self):
        g = TaskGraph.from_dict({"a": (sum, ([1, 2, 3],), 1)})
        assert g.task("a").args == ([1, 2, 3],)
        assert run_graph(g) == {"a": 6}

    def test_wrapped_lone_tuple(self):
        assert run_graph({"a": (len, ((1, 2, 3),), 1)}) == {"a": 3}

    def test_wrapped_lone_dict(self):
        assert run_graph({"a": (len, ({"x": 1, "y": 2},), 1)}) == {"a": 2}

    def test_entry_without_cost(self):
        g = TaskGraph.from_dict({"a": (abs, -1)})
        assert g.task("a").cost == 1.0

    def test_list_entry(self):
        g = TaskGraph.from_dict({"a": [abs, -1, 4]})
        assert g.task("a").cost == 4

    def test_a_task_graph_is_returned_as_is(self):
        g = TaskGraph()
        assert TaskGraph.from_dict(g) is g

    def test_does_not_validate(self):
        g = TaskGraph.from_dict({"a": (abs, Dependency("zz"), 1)})
        with pytest.raises(DefinitionError):
            g.validate()

    @pytest.mark.parametrize("graph", [[("a", (abs, 1, 1))], None, "graph"])
    def test_not_a_dict(self, graph):
        with pytest.raises(DefinitionError, match=type(graph).__name__) as info:
            TaskGraph.from_dict(graph)
        assert "node id -> (function, args, cost)" in str(info.value)

    @pytest.mark.parametrize(
        "entry", [abs, (abs,), (abs, 1, 1, 1), "abc", None, {"f": abs}], ids=repr
    )
    def test_malformed_entry_names_the_task(self, entry):
        with pytest.raises(
            DefinitionError, match=r"task 'bad': expected \(function, args, cost\)"
        ) as info:
            TaskGraph.from_dict({"good": (abs, 1, 1), "bad": entry})
        assert info.value.field == "bad"

    def test_non_callable_function(self):
        with pytest.raises(
            DefinitionError, match=r"task 'a': function must be callable"
        ):
            TaskGraph.from_dict({"a": ("abs", -1, 1)})

    def test_negative_cost(self):
        with pytest.raises(DefinitionError, match=r"task 'a': cost .* got -2"):
            TaskGraph.from_dict({"a": (abs, -1, -2)})

    def test_dict_argument_with_non_string_keys(self):
        with pytest.raises(DefinitionError, match=r"task 'a': kwargs"):
            TaskGraph.from_dict({"a": (len, {1: "x"}, 1)})


# -- TaskGraph: validation -----------------------------------------------------


class TestValidate:
    def test_valid_graph(self):
        g = TaskGraph.from_dict({"a": (abs, -1, 1), "b": (abs, Dependency("a"), 1)})
        g.validate()
        g.validate()

    def test_unknown_dependency_names_both_tasks(self):
        g = TaskGraph.from_dict({"a": (abs, -1, 1), "b": (abs, Dependency("zz"), 1)})
        with pytest.raises(DefinitionError) as info:
            g.validate()
        assert str(info.value) == "task 'b' depends on unknown task 'zz'"
        assert info.value.field == "b"
        assert not isinstance(info.value, CycleError)

    def test_self_dependency(self):
        g = TaskGraph.from_dict({"a": (abs, Dependency("a"), 1)})
        with pytest.raises(CycleError) as info:
            g.validate()
        assert info.value.cycle == ["a", "a"]
        assert str(info.value).startswith("cycle: 'a' -> 'a'")

    def test_three_cycle(self):
        """a -> b -> c -> a, and x hangs off the cycle: x is not part of it."""
        g = TaskGraph.from_dict(
            {
                "a": (abs, Dependency("c"), 1),
                "b": (abs, Dependency("a"), 1),
                "c": (abs, Dependency("b"), 1),
                "x": (abs, Dependency("a"), 1),
            }
        )
        with pytest.raises(CycleError) as info:
            g.validate()
        cycle = info.value.cycle
        assert_cycle_of(g, cycle, ["a", "b", "c"])
        assert str(info.value).startswith("cycle: " + " -> ".join(map(repr, cycle)))

    def test_cycle_reached_through_a_tail(self):
        """s -> a -> b -> a: the cycle is a, b; s only leads to it."""
        g = TaskGraph.from_dict(
            {
                "s": (abs, 1, 1),
                "a": (max, (Dependency("s"), Dependency("b")), 1),
                "b": (abs, Dependency("a"), 1),
            }
        )
        with pytest.raises(CycleError) as info:
            g.validate()
        assert_cycle_of(g, info.value.cycle, ["a", "b"])

    def test_cycle_error_is_a_definition_and_value_error(self):
        g = TaskGraph.from_dict({"a": (abs, Dependency("a"), 1)})
        with pytest.raises(ValueError):
            g.validate()
        with pytest.raises(DefinitionError):
            g.validate()

    def test_topological_order_validates(self):
        g = TaskGraph.from_dict(
            {"a": (abs, Dependency("b"), 1), "b": (abs, Dependency("a"), 1)}
        )
        with pytest.raises(CycleError):
            g.topological_order()

    def test_adding_after_validation_validates_again(self):
        g = TaskGraph()
        g.add("a", abs, (1,))
        g.validate()
        g.add("b", abs, (Dependency("zz"),))
        with pytest.raises(DefinitionError, match="unknown task 'zz'"):
            g.validate()


# -- TaskGraph: reading --------------------------------------------------------


DIAMOND = {
    "top": (lambda: 1, (), 1),
    "left": (lambda x: x + 1, Dependency("top"), 2),
    "right": (lambda x: x * 10, Dependency("top"), 3),
    "bottom": (lambda x, y: (x, y), (Dependency("left"), Dependency("right")), 4),
}


class TestTaskGraphReading:
    """The diamond::

            top
           /   \\
        left   right
           \\   /
           bottom
    """

    def test_dependencies_and_dependents(self):
        g = TaskGraph.from_dict(DIAMOND)
        assert set(g.dependencies("bottom")) == {"left", "right"}
        assert set(g.dependents("top")) == {"left", "right"}
        assert list(g.dependencies("top")) == []

    def test_topological_order(self):
        order = TaskGraph.from_dict(DIAMOND).topological_order()
        assert order[0] == "top"
        assert order[-1] == "bottom"
        assert set(order) == set(DIAMOND)

    def test_items_in_insertion_order(self):
        g = TaskGraph.from_dict(DIAMOND)
        assert [node for node, _ in g.items()] == list(DIAMOND)
        assert all(isinstance(task, Task) for _, task in g.items())

    def test_container_protocol(self):
        g = TaskGraph.from_dict(DIAMOND)
        assert len(g) == 4
        assert list(g) == list(DIAMOND)
        assert "left" in g
        assert "nope" not in g
        assert repr(g) == "<TaskGraph: 4 tasks, 4 dependencies>"

    def test_unknown_dependency_is_not_a_task(self):
        g = TaskGraph.from_dict({"a": (abs, Dependency("zz"), 1)})
        assert "zz" not in g
        assert list(g) == ["a"]
        assert len(g) == 1
        assert [node for node, _ in g.items()] == ["a"]
        assert repr(g) == "<TaskGraph: 1 tasks, 1 dependencies>"

    def test_to_dict_round_trip(self):
        g = TaskGraph.from_dict(DIAMOND)
        again = TaskGraph.from_dict(g.to_dict())
        assert (
            run_graph(again)
            == run_graph(g)
            == {
                "top": 1,
                "left": 2,
                "right": 10,
                "bottom": (2, 10),
            }
        )
        assert edge_costs(again) == edge_costs(g)
        assert [t.cost for _, t in again.items()] == [1, 2, 3, 4]

    def test_to_dict_forms(self):
        g = TaskGraph()
        g.add("p", pow, (2, 3), cost=2)
        g.add("k", dict, kwargs={"x": 1})
        g.add("n", list)
        assert g.to_dict() == {
            "p": (pow, (2, 3), 2),
            "k": (dict, {"x": 1}, 1.0),
            "n": (list, (), 1.0),
        }

    def test_to_dict_keeps_unknown_dependencies(self):
        g = TaskGraph.from_dict({"a": (abs, Dependency("zz"), 1)})
        assert g.to_dict() == {"a": (abs, (Dependency("zz"),), 1)}

    def test_to_dict_refuses_both_argument_kinds(self):
        g = TaskGraph()
        g.add("a", lambda x, *, y: x + y, (1,), {"y": 2})
        with pytest.raises(
            DefinitionError, match="task 'a' has both positional and keyword"
        ):
            g.to_dict()


def _dag_dicts():
    @st.composite
    def build(draw):
        n = draw(st.integers(1, 10))
        names = draw(
            st.lists(
                st.one_of(st.text(min_size=1, max_size=3), st.integers(-5, 5)),
                min_size=n,
                max_size=n,
                unique=True,
            )
        )
        costs = st.one_of(st.integers(0, 5), st.floats(0, 5))
        graph, expected = {}, {}
        for i in range(n):
            needed = (
                draw(st.lists(st.tuples(st.integers(0, i - 1), costs), max_size=4))
                if i
                else []
            )
            deps = [Dependency(names[j], None, c) for j, c in needed]
            for j, c in needed:
                edge = (names[j], names[i])
                expected[edge] = max(expected.get(edge, c), c)
            args = {"xs": deps} if draw(st.booleans()) else tuple(deps)
            graph[names[i]] = (lambda *a, **k: None, args, draw(costs))
        order = draw(st.permutations(list(graph)))
        return {node: graph[node] for node in order}, expected

    return build()


class TestTaskGraphProperties:
    @PROPERTY
    @given(_dag_dicts())
    def test_edges_match_the_dependencies(self, case):
        graph, expected = case
        g = TaskGraph.from_dict(graph)
        g.validate()
        assert edge_costs(g) == expected
        for node, task in g.items():
            assert set(task.dependencies) == set(g.dependencies(node))
        position = {node: i for i, node in enumerate(g.topological_order())}
        assert all(position[u] < position[v] for u, v in expected)
        assert len(g) == len(graph)
        assert set(g) == set(graph)


# -- remove_duplicates ---------------------------------------------------------


class NoHash:
    """Like a numpy array: compares, but has no hash."""

    __hash__ = None

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, NoHash) and self.value == other.value


class TestRemoveDuplicates:
    def test_docstring_example(self):
        g = {"a": (abs, -1, 1), "b": (abs, -1, 1), "c": (abs, -1.0, 1)}
        reduced, keys = remove_duplicates(g)
        assert sorted(reduced) == ["a", "c"]
        assert keys == {"a": ["b"]}

    def test_same_function_and_equal_args_are_merged(self):
        f = lambda *xs: xs
        g = {
            "a": (f, (1, [2, "x"]), 1),
            "b": (f, (1, [2, "x"]), 1),
            "c": (f, (1, [2]), 1),
        }
        reduced, keys = remove_duplicates(g)
        assert list(reduced) == ["a", "c"]
        assert keys == {"a": ["b"]}

    def test_keyword_order_does_not_matter(self):
        f = lambda **k: k
        g = {"a": (f, {"x": 1, "y": 2}, 1), "b": (f, {"y": 2, "x": 1}, 1)}
        assert remove_duplicates(g)[1] == {"a": ["b"]}

    def test_one_true_and_one_point_zero_are_not_merged(self):
        f = lambda x: repr(x)
        g = {"a": (f, 1, 1), "b": (f, True, 1), "c": (f, 1.0, 1)}
        reduced, keys = remove_duplicates(g)
        assert list(reduced) == ["a", "b", "c"]
        assert keys == {}

    def test_nested_one_and_true_are_not_merged(self):
        f = lambda x: repr(x)
        g = {"a": (f, ([1],), 1), "b": (f, ([True],), 1)}
        assert remove_duplicates(g)[1] == {}

    def test_dict_keys_one_and_true_are_not_merged(self):
        f = lambda d: repr(d)
        g = {"a": (f, ({1: "x"},), 1), "b": (f, ({True: "x"},), 1)}
        reduced, keys = remove_duplicates(g)
        assert keys == {}
        assert run_graph(reduced) == {"a": "{1: 'x'}", "b": "{True: 'x'}"}

    def test_list_and_tuple_are_not_merged(self):
        f = lambda x: x
        assert remove_duplicates({"a": (f, ([1],), 1), "b": (f, ((1,),), 1)})[1] == {}

    def test_different_functions_with_equal_code_are_not_merged(self):
        def make():
            return lambda x: x + 1

        f, g_ = make(), make()
        assert f.__code__ is g_.__code__
        reduced, keys = remove_duplicates({"a": (f, 1, 1), "b": (g_, 1, 1)})
        assert keys == {}
        assert list(reduced) == ["a", "b"]

    def test_merging_is_transitive(self):
        """a and b are equal, so c = f(a) and d = f(b) are too; e sees one
        task twice::

            a   b   (merged)
            |   |
            c   d   (merged)
             \\ /
              e
        """
        f = lambda x: x + 1
        g = {
            "a": (f, 1, 1),
            "b": (f, 1, 1),
            "c": (f, Dependency("a"), 1),
            "d": (f, Dependency("b"), 1),
            "e": (lambda x, y: x + y, (Dependency("c"), Dependency("d")), 1),
        }
        reduced, keys = remove_duplicates(g)
        assert keys == {"a": ["b"], "c": ["d"]}
        assert list(reduced) == ["a", "c", "e"]
        assert reduced["e"][1] == (Dependency("c"), Dependency("c"))
        assert run_graph(reduced)["e"] == run_graph(g)["e"] == 6

    def test_dependencies_with_different_keys_are_not_merged(self):
        g = {
            "a": (lambda: [1, 2], (), 1),
            "b": (abs, Dependency("a", 0), 1),
            "c": (abs, Dependency("a", 1), 1),
        }
        assert remove_duplicates(g)[1] == {}

    def test_slices_are_compared(self):
        f = lambda s: s
        g = {
            "a": (f, slice(1, 2), 1),
            "b": (f, slice(1, 2), 1),
            "c": (f, slice(1, 3), 1),
        }
        assert remove_duplicates(g)[1] == {"a": ["b"]}

    def test_largest_cost_is_kept(self):
        g = {"a": (abs, -1, 2), "b": (abs, -1, 7), "c": (abs, -1, 3)}
        reduced, keys = remove_duplicates(g)
        assert keys == {"a": ["b", "c"]}
        assert reduced == {"a": (abs, (-1,), 7)}

    def test_dict_in_dict_out(self):
        reduced, _ = remove_duplicates({"a": (abs, -1, 1)})
        assert type(reduced) is dict
        assert reduced == {"a": (abs, (-1,), 1)}

    def test_task_graph_in_task_graph_out(self):
        g = TaskGraph()
        g.add("a", abs, (-1,), cost=1, memory=64, retries=2, timeout=5)
        g.add("b", abs, (-1,), cost=3)
        g.add("c", abs, (Dependency("b", None, 2),))
        reduced, keys = remove_duplicates(g)
        assert isinstance(reduced, TaskGraph)
        assert keys == {"a": ["b"]}
        kept = reduced.task("a")
        assert (kept.cost, kept.memory, kept.retries, kept.timeout) == (3, 64, 2, 5)
        assert edge_costs(reduced) == {("a", "c"): 2}
        assert list(g) == ["a", "b", "c"]

    def test_unhashable_but_handled_args_are_merged(self):
        f = lambda x: x
        g = {"a": (f, ([{"k": [1]}],), 1), "b": (f, ([{"k": [1]}],), 1)}
        assert remove_duplicates(g)[1] == {"a": ["b"]}

    def test_args_without_a_hash_are_never_merged(self):
        f = lambda x: x.value
        shared = NoHash(1)
        g = {
            "a": (f, NoHash(1), 1),
            "b": (f, NoHash(1), 1),
            "c": (f, shared, 1),
            "d": (f, shared, 1),
            "e": (f, ([shared],), 1),
        }
        reduced, keys = remove_duplicates(g)
        assert keys == {}
        assert list(reduced) == list(g)

    def test_dependents_of_unhashable_tasks_are_still_compared(self):
        f = lambda x: x
        g = {
            "a": (f, NoHash(1), 1),
            "b": (abs, Dependency("a"), 1),
            "c": (abs, Dependency("a"), 1),
        }
        assert remove_duplicates(g)[1] == {"b": ["c"]}

    def test_invalid_graph(self):
        with pytest.raises(DefinitionError, match="unknown task 'zz'"):
            remove_duplicates({"a": (abs, Dependency("zz"), 1)})
        with pytest.raises(CycleError):
            remove_duplicates({"a": (abs, Dependency("a"), 1)})


DEDUPE_FUNCTIONS = (lambda *xs: ("f", xs), lambda *xs: ("g", xs))


def _graphs_with_duplicates():
    @st.composite
    def build(draw):
        n = draw(st.integers(1, 10))
        names = draw(st.permutations([f"n{i}" for i in range(n)]))
        graph = {}
        for i in range(n):
            needed = draw(st.lists(st.integers(0, i - 1), max_size=2)) if i else []
            constant = draw(st.sampled_from([0, 1, True, 1.0]))
            args = (constant, *(Dependency(names[j]) for j in needed))
            function = draw(st.sampled_from(DEDUPE_FUNCTIONS))
            graph[names[i]] = (function, args, draw(st.integers(0, 3)))
        return graph

    return build()


class TestRemoveDuplicatesProperties:
    @PROPERTY
    @given(_graphs_with_duplicates())
    def test_results_and_costs_are_preserved(self, graph):
        reduced, keys = remove_duplicates(graph)
        merged = [node for group in keys.values() for node in group]
        assert set(keys) <= set(reduced)
        assert sorted([*reduced, *merged]) == sorted(graph)
        kept_for = {node: node for node in reduced}
        kept_for.update({node: kept for kept, group in keys.items() for node in group})
        before, after = run_graph(graph), run_graph(reduced)
        for node, kept in kept_for.items():
            assert repr(after[kept]) == repr(before[node])
        for kept, group in keys.items():
            assert reduced[kept][2] == max(graph[n][2] for n in [kept, *group])
        assert remove_duplicates(reduced)[1] == {}


# -- prefix --------------------------------------------------------------------


class TestPrefix:
    def test_ids_and_dependencies_are_prefixed(self):
        g = {"a": (abs, -1, 1), "b": (abs, Dependency("a", ("k", 0), 2.5), 3)}
        out = prefix(g, "run1")
        assert type(out) is dict
        assert out == {
            ("run1", "a"): (abs, (-1,), 1),
            ("run1", "b"): (abs, (Dependency(("run1", "a"), ("k", 0), 2.5),), 3),
        }

    def test_tuple_ids_are_flattened(self):
        g = {("a", 1): (abs, -1, 1), ("b", 2): (abs, [Dependency(("a", 1))], 1)}
        out = prefix(g, "p")
        assert list(out) == [("p", "a", 1), ("p", "b", 2)]
        assert out[("p", "b", 2)][1] == (Dependency(("p", "a", 1)),)

    def test_dependencies_in_keyword_arguments(self):
        out = prefix({"a": (abs, -1, 1), "b": (dict, {"x": Dependency("a")}, 1)}, 0)
        assert out[(0, "b")][1] == {"x": Dependency((0, "a"))}

    def test_task_graph_in_task_graph_out(self):
        g = TaskGraph()
        g.add("a", abs, (-1,), memory=8, retries=1, timeout=3)
        g.add("b", abs, (Dependency("a", None, 4),))
        out = prefix(g, "p")
        assert isinstance(out, TaskGraph)
        assert list(out) == [("p", "a"), ("p", "b")]
        task = out.task(("p", "a"))
        assert (task.memory, task.retries, task.timeout) == (8, 1, 3)
        assert edge_costs(out) == {(("p", "a"), ("p", "b")): 4}
        assert list(g) == ["a", "b"]

    def test_prefixed_copies_combine(self):
        g = {"a": (lambda: 2, (), 1), "b": (lambda x: x * 3, Dependency("a"), 1)}
        combined = {**prefix(g, 1), **prefix(g, 2)}
        assert run_graph(combined) == {
            (1, "a"): 2,
            (1, "b"): 6,
            (2, "a"): 2,
            (2, "b"): 6,
        }

    def test_unknown_dependencies_are_prefixed_too(self):
        out = prefix({"a": (abs, Dependency("zz"), 1)}, "p")
        assert out == {("p", "a"): (abs, (Dependency(("p", "zz")),), 1)}


# -- to_dot --------------------------------------------------------------------


def _dot_strings(line):
    """The quoted strings of one DOT line, unescaped."""
    return [
        re.sub(r"\\(.)", r"\1", s) for s in re.findall(r'"((?:[^"\\]|\\.)*)"', line)
    ]


class TestToDot:
    def test_docstring_example(self):
        dot = to_dot({"a": (abs, -1, 1), "b": (abs, Dependency("a"), 1)})
        assert dot == "\n".join(
            [
                "digraph G {",
                "    node [style=filled, fillcolor=lightblue]",
                '    "a"',
                '    "b"',
                '    "a" -> "b"',
                "}",
            ]
        )

    def test_every_node_and_edge(self):
        g = TaskGraph.from_dict(DIAMOND)
        lines = to_dot(g).splitlines()
        assert lines[0] == "digraph G {"
        assert lines[-1] == "}"
        nodes = [
            _dot_strings(line) for line in lines if "->" not in line and '"' in line
        ]
        edges = [_dot_strings(line) for line in lines if "->" in line]
        assert sorted(n for [n] in nodes) == sorted(DIAMOND)
        assert sorted(map(tuple, edges)) == sorted(g.nx.edges)

    def test_quotes_and_backslashes_are_escaped(self):
        node = 'say "hi" \\ bye'
        dot = to_dot({node: (abs, -1, 1), "b": (abs, Dependency(node), 1)})
        assert '"say \\"hi\\" \\\\ bye"' in dot
        edge = next(line for line in dot.splitlines() if "->" in line)
        assert _dot_strings(edge) == [node, "b"]
        for line in dot.splitlines():
            assert len(re.findall(r'(?<!\\)(?:\\\\)*"', line)) % 2 == 0

    def test_tuple_ids(self):
        dot = to_dot({("a", 1): (abs, -1, 1), "b": (abs, Dependency(("a", 1)), 1)})
        assert '    "a, 1" -> "b"' in dot.splitlines()

    def test_fill_color(self):
        assert "fillcolor=red]" in to_dot({"a": (abs, -1, 1)}, fill_color="red")

    def test_invalid_graph(self):
        with pytest.raises(CycleError):
            to_dot({"a": (abs, Dependency("a"), 1)})
        with pytest.raises(DefinitionError, match="unknown task"):
            to_dot({"a": (abs, Dependency("zz"), 1)})


class TestAfter:
    def test_ordering_without_data(self):
        """a   b        c runs after a and b, and receives neither result."""
        g = TaskGraph()
        g.add("a", abs, (-1,))
        b = g.add("b", abs, (-2,))
        g.add("c", lambda x: x, (b,), after=["a", "b"])
        task = g.task("c")
        assert task.inputs == ("b",)
        assert task.dependencies == ("b", "a")
        assert set(g.dependencies("c")) == {"a", "b"}

    def test_unknown_after_is_reported(self):
        g = TaskGraph()
        g.add("c", abs, (1,), after=["zz"])
        with pytest.raises(DefinitionError, match="unknown task 'zz'"):
            g.validate()

    def test_prefix_relabels_after(self):
        g = TaskGraph()
        g.add("a", abs, (1,))
        g.add("c", abs, (1,), after=["a"])
        assert prefix(g, "p").task(("p", "c")).after == (("p", "a"),)
