"""A small map-reduce over generated text shards, planned and run by alma_dag.

Each shard is generated, its words are counted, pairs of counts are merged
in a tree, and the top words are reported. The functions are lambdas and
closures defined right here: they travel to the worker processes with
cloudpickle.

Run it with ``python examples/taskgraph/pipeline.py [--workers N]``.
"""

from __future__ import annotations

import argparse
import collections
import random

import alma_dag as ad

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()


def make_shard(seed: int, n_words: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def build(n_shards: int, n_words: int) -> ad.TaskGraph:
    graph = ad.TaskGraph()
    counts = []
    for i in range(n_shards):
        text = graph.add(("shard", i), make_shard, (i, n_words), cost=2)
        counts.append(
            graph.add(
                ("count", i), lambda t: collections.Counter(t.split()), (text,), cost=3
            )
        )
    level = 0
    while len(counts) > 1:
        merged = []
        for j in range(0, len(counts) - 1, 2):
            merged.append(
                graph.add(
                    ("merge", level, j),
                    lambda a, b: a + b,
                    (counts[j], counts[j + 1]),
                    cost=1,
                )
            )
        if len(counts) % 2:
            merged.append(counts[-1])
        counts, level = merged, level + 1
    top = 3
    graph.add("top", lambda c: c.most_common(top), (counts[0],), cost=0.5)
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--words", type=int, default=20_000)
    options = parser.parse_args()

    graph = build(options.shards, options.words)
    plan = ad.heft(graph, options.workers)
    print(
        f"{graph}; planned makespan {plan.makespan:.1f} "
        f"(lower bound {plan.lower_bound:.1f}) on {options.workers} workers"
    )
    dispatcher = ad.Dispatcher(graph, workers=options.workers, plan=plan)
    dispatcher.run()
    progress = dispatcher.progress()
    print(
        f"{progress.done} tasks done, {progress.failed} failed, "
        f"in {progress.elapsed:.2f} s"
    )
    for word, count in dispatcher.results["top"]:
        print(f"{word:>8}: {count}")


if __name__ == "__main__":
    main()
