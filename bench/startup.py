"""Benchmark: how long the command line takes to start, against the floor of importing torch.

    python bench/startup.py [--repeats 7]

Each command runs in a fresh interpreter (the way a user meets it); the commands are interleaved
(floor, import vizkit, vizkit --help, ...) repeatedly and each one's median is reported, with its
ratio to ``python -c "import torch"``: the part of start-up vizkit controls is what lies above
that floor (the analyses' own commands need torch; ``--help`` and ``import vizkit`` should not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIZKIT = [sys.executable, "-m", "vizkit"]
COMMANDS = {
    "python (nothing imported)": [sys.executable, "-c", "pass"],
    "import torch (floor)": [sys.executable, "-c", "import torch"],
    "import vizkit": [sys.executable, "-c", "import vizkit"],
    "vizkit --help": [*VIZKIT, "--help"],
    "vizkit list analyses": [*VIZKIT, "list", "analyses"],
    "vizkit run occlusion --help": [*VIZKIT, "run", "occlusion", "--help"],
    "vizkit layers zfnet-compact": [*VIZKIT, "layers", "zfnet-compact"],
}


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the file cache once, untimed
        seconds(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    floor = medians["import torch (floor)"]
    print(f"{'command':32s} {'median s':>9s} {'x torch import':>15s}")
    for name, median in medians.items():
        print(f"{name:32s} {median:9.3f} {median / floor:15.2f}")
    print(json.dumps({"repeats": args.repeats, "median_seconds": {k: round(v, 3) for k, v in medians.items()}}))


if __name__ == "__main__":
    main()
