"""Cold-process time of `runner validate` on one spec, beside `python -c "import torch"`.

    python bench/validate.py [--runs 15] [--spec specs/examples/chatty-sft.yaml]

Both are measured in the same run, interleaved, so machine noise hits both alike.
Goal (issue 2): median at most 0.3 s, and at least 10 times faster than importing torch.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def cold(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--spec", default="specs/examples/chatty-sft.yaml")
    args = parser.parse_args()
    validate = [sys.executable, "-m", "runner", "validate", args.spec]
    import_torch = [sys.executable, "-c", "import torch"]
    cold(validate), cold(import_torch)  # warm the file cache, not the interpreter
    times: dict[str, list[float]] = {"runner validate": [], "import torch": []}
    for _ in range(args.runs):
        times["runner validate"].append(cold(validate))
        times["import torch"].append(cold(import_torch))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        print(f"{name:16} median {median:.3f} s  (range {spread} s, {args.runs} cold runs)")
    ratio = medians["import torch"] / medians["runner validate"]
    verdict = "meets" if medians["runner validate"] <= 0.3 and ratio >= 10 else "misses"
    print(f"import torch / runner validate = {ratio:.1f}x  -> {verdict} the goal (<= 0.3 s and >= 10x)")


if __name__ == "__main__":
    main()
