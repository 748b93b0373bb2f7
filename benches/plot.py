#!/usr/bin/env python3
"""Plots the frame-throughput and hand-off tables of benches/RESULTS.md into
benches/results.png (needs matplotlib: pip install matplotlib).

    python3 benches/plot.py

The tables are the ones the benches print (`bash .gpu/run bench-suite --bench frames`,
`--bench sync`), pasted into RESULTS.md; this reads them back from there so the plot and the
tables cannot disagree.
"""
import pathlib
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).parent
TEXT = (HERE / "RESULTS.md").read_text()


def table(first_header):
    """Rows (lists of cells) of the markdown table whose header starts with `first_header`."""
    lines = TEXT.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("| " + first_header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def number(cell):
    return float(re.sub(r"[^0-9.]", "", cell.split("/")[0].split("(")[0]))


fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))

# Frames per second of the render -> CUDA -> Vulkan loop, log scale.
frames = table("size | zero-copy fps")
labels = [r[0] for r in frames]
series = {
    "zero-copy, semaphores": [number(r[1].split("/")[0]) for r in frames],
    "zero-copy, low-latency": [number(r[1].split("/")[1]) for r in frames],
    "staged through host": [number(r[2]) for r in frames],
    "GPU-busy bound": [number(r[5]) for r in frames],
}
width = 0.2
for k, (name, values) in enumerate(series.items()):
    xs = [i + (k - 1.5) * width for i in range(len(labels))]
    left.bar(xs, values, width, label=name)
left.set_xticks(range(len(labels)), labels)
left.set_yscale("log")
left.set_ylabel("frames per second")
left.set_title("render -> CUDA tone map -> Vulkan (H100)")
left.legend(fontsize=8)

# Pipelined hand-offs per second with empty work, by frames in flight.
sync = [r for r in table("measurement (empty work)") if r[0].startswith("pipelined")]
n = [int(re.search(r"(\d+) in flight", r[0]).group(1)) for r in sync]
for col, name in [(1, "naive chain"), (2, "FrameSync semaphores"), (3, "FrameSync low-latency")]:
    right.plot(n, [number(r[col]) for r in sync], marker="o", label=name)
right.axhline(10_000, color="grey", linestyle="--", linewidth=1, label="goal 10,000/s")
right.set_xticks(n)
right.set_xlabel("frames in flight")
right.set_ylabel("hand-offs per second")
right.set_yscale("log")
right.set_title("Vulkan -> CUDA -> Vulkan, empty work (H100)")
right.legend(fontsize=8)

fig.tight_layout()
fig.savefig(HERE / "results.png", dpi=110)
print("wrote", HERE / "results.png")
