"""An experiment engine that sweeps parameters: three ways to estimate pi.

Each combination of the sweep below is one estimate, written as a JSON file
named after the combination in the run's result directory; a summary table
goes to ``results.csv`` there and to stdout. A combination whose file
exists is not computed again, so a stopped run continues where it left off
with ``-c``::

    python examples/engine/sweep_engine.py             # in ./SweepEngine_<date>
    python examples/engine/sweep_engine.py -L -l DEBUG # copy outputs, log more
    python examples/engine/sweep_engine.py -c SweepEngine_<date>  # continue
    python examples/engine/sweep_engine.py --scale 10  # more terms, samples

Each ``--scale`` has its own result files, so continuing with another
scale computes everything again.

``-h`` lists every option: ``--scale`` comes from this engine's ``init``,
the others from ``Engine``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time

from alma_dag import Engine, logger, slugify, sweep

# The method's own parameters are swept only with that method.
PARAMETERS = {
    "method": {
        "leibniz": {"terms": [10, 1_000, 10_000]},
        "monte-carlo": {"samples": [1_000, 10_000], "seed": [1, 2]},
        "wallis": {"terms": [10, 1_000]},
    },
}


def leibniz(terms: int) -> float:
    return 4 * sum((-1) ** k / (2 * k + 1) for k in range(terms))


def monte_carlo(samples: int, seed: int) -> float:
    rng = random.Random(seed)
    inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1 for _ in range(samples))
    return 4 * inside / samples


def wallis(terms: int) -> float:
    return 2 * math.prod(4 * k * k / (4 * k * k - 1) for k in range(1, terms + 1))


def estimate(combination: dict, scale: int) -> float:
    method = combination["method"]
    if method == "leibniz":
        return leibniz(combination["terms"] * scale)
    if method == "wallis":
        return wallis(combination["terms"] * scale)
    return monte_carlo(combination["samples"] * scale, combination["seed"])


class SweepEngine(Engine):
    """Estimate pi in several ways, one result file per combination."""

    def init(self):
        self.args_parser.add_argument(
            "--scale",
            type=int,
            default=1,
            help="multiply every number of terms or samples (default: 1)",
        )

    def run(self):
        combinations = sweep(PARAMETERS)
        logger.info("%d combinations, scale %d", len(combinations), self.args.scale)
        rows = []
        for i, combination in enumerate(combinations, start=1):
            name = slugify({**combination, "scale": self.args.scale})
            path = os.path.join(self.result_dir, name + ".json")
            if os.path.exists(path):
                logger.info("[%d/%d] %s: done already", i, len(combinations), path)
                with open(path, encoding="utf-8") as file:
                    rows.append(json.load(file))
                continue
            started = time.perf_counter()
            value = estimate(combination, self.args.scale)
            row = {
                **combination,
                "estimate": value,
                "error": abs(value - math.pi),
                "seconds": time.perf_counter() - started,
            }
            logger.debug("%s -> %r", combination, row)
            # Written whole, then renamed: a run stopped here leaves no
            # half-written file that -c would take for a result.
            with open(path + ".tmp", "w", encoding="utf-8") as file:
                json.dump(row, file)
            os.replace(path + ".tmp", path)
            logger.info(
                "[%d/%d] %s: error %.2e",
                i,
                len(combinations),
                combination,
                row["error"],
            )
            rows.append(row)
        self.report(rows)

    def report(self, rows):
        fields = ["method", "terms", "samples", "seed", "estimate", "error"]
        with open(
            os.path.join(self.result_dir, "results.csv"),
            "w",
            newline="",
            encoding="utf-8",
        ) as file:
            writer = csv.DictWriter(file, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        for row in sorted(rows, key=lambda row: row["error"]):
            size = row.get("terms") or row.get("samples")
            print(f"{row['method']:<12} {size:>8} {row['estimate']:.10f}")


if __name__ == "__main__":
    SweepEngine().start()
