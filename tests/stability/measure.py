"""Measure the spread of every learned-outcome statistic the suite asserts (``helpers.stability.margin``).

Runs the tests that assert learned outcomes once per configuration -- a seed offset (added to every seed the
tests and their fixtures fix), a torch thread count, bf16 autocast on or off (what a CPU with AVX512-BF16/AMX
does by default) -- and prints, per statistic, the threshold and the min/max over all runs, with the worst
run's distance to the threshold. Several configurations run at once (``--jobs``), so the CPU is busy.

    python tests/stability/measure.py --seeds 0-9 --threads 1,2 --bf16 0,1 --jobs 2 --out /tmp/stab

Raw values go to ``<out>/values.jsonl``; the table is printed and written to ``<out>/table.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The tests that assert learned outcomes (each states its statistic through helpers.stability.margin).
TESTS = [
    "tests/evaluation/test_evaluation.py",
    "tests/explainers/test_explainer.py::test_fit_beats_untrained_decoder_and_does_not_touch_the_classifier",
    "tests/explainers/test_explainer.py::test_data_as_loader_dataset_or_tensors_give_the_same_model",
    "tests/explainers/test_explainer.py::test_fast_and_plain_paths_agree_on_cpu",
    "tests/explainers/test_explainer.py::test_compiled_loss_gives_the_eager_result",
    "tests/explainers/test_explainer.py::test_streamed_activations_match_the_cache",
    "tests/explainers/test_explainer.py::test_fast_path_classification_loss_uses_the_classifier_function",
    "tests/models/test_classifier.py::test_tiny_vgg_learns_fashion_mnist_in_one_epoch",
    "tests/saliency/test_relevance.py::test_kept_map_lies_on_the_garment",
    "tests/saliency/test_scores.py::test_garment_mask_beats_random_on_deletion_and_insertion",
    "tests/saliency/test_saliency.py",
    "tests/evaluation/test_sweep.py::test_summary_outputs",
    "tests/models/test_real_models.py",
    "tests/data/test_lazy.py::test_cli_fit_of_5000_lazily_read_images_converges_with_bounded_memory",
    "tests/test_decoder_scaled.py::test_cli_fit_records_decoder_and_a_real_64px_fit_converges",
    "tests/training/test_recipe.py::test_fast_recipe_converges_where_the_paper_recipe_does_not",
]


def _ints(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return out


def run_one(seed: int, threads: int, bf16: int, out: Path, tests: list[str]) -> int:
    env = dict(
        os.environ,
        CLADEC_STABILITY_SEED=str(seed),
        CLADEC_TEST_THREADS=str(threads),
        CLADEC_STABILITY_BF16=str(bf16),
        CLADEC_STABILITY_LOG=str(out / "values.jsonl"),
        # the processes the tests start (a CLI fit in a child process) run at the same thread count
        OMP_NUM_THREADS=str(threads),
    )
    name = f"s{seed}-t{threads}-b{bf16}"
    log = out / f"pytest-{name}.txt"
    # a base temporary folder of its own: pytest removes all but the newest three of its default ones, which
    # other pytest runs on the machine would otherwise do to this one's
    argv = ["-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--basetemp", str(out / f"tmp-{name}"), *tests]
    with log.open("w") as f:
        return subprocess.run(
            [sys.executable, "-m", "pytest", *argv],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        ).returncode


def table(values: list[dict]) -> str:
    by: dict[str, list[dict]] = {}
    for v in values:
        by.setdefault(v["name"], []).append(v)
    lines = ["| statistic | threshold | runs | min | max | worst run's room |", "| --- | --- | --- | --- | --- | --- |"]
    for name, vs in sorted(by.items()):
        op, thr = vs[0]["op"], vs[0]["threshold"]
        xs = [v["value"] for v in vs]
        worst = min(xs) if op in (">", ">=") else max(xs)
        room = worst - thr if op in (">", ">=") else thr - worst
        lines.append(f"| {name} | {op} {thr:.4g} | {len(xs)} | {min(xs):.4g} | {max(xs):.4g} | {room:+.4g} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=_ints, default=_ints("0-9"))
    ap.add_argument("--threads", type=_ints, default=[1, 2])
    ap.add_argument("--bf16", type=_ints, default=[0, 1], help="bf16 autocast off/on (0,1)")
    ap.add_argument("--jobs", type=int, default=2, help="configurations run at once (a busy CPU)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tests", nargs="*", default=TESTS)
    ap.add_argument("--table-only", action="store_true", help="print the table of an earlier --out")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.table_only:
        configs = list(itertools.product(a.seeds, a.threads, a.bf16))
        with ThreadPoolExecutor(a.jobs) as pool:
            codes = list(pool.map(lambda c: run_one(*c, a.out, a.tests), configs))
        failed = [c for c, rc in zip(configs, codes, strict=True) if rc]
        print(f"{len(configs)} runs, {len(failed)} with a failing test: {failed}")
    values = [json.loads(line) for line in (a.out / "values.jsonl").read_text().splitlines() if line.strip()]
    text = table(values)
    (a.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
