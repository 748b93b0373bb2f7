#!/usr/bin/env python3
"""Plots the frame-throughput (share of the GPU-busy bound per mode) and hand-off tables
of benches/RESULTS.md into benches/results.png (needs matplotlib: pip install matplotlib).

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

# Share of the GPU-busy bound each mode of the render -> CUDA -> Vulkan loop reaches.
frames = [r for r in table("size | mode | frames per crossing") if r[2] != "-" and r[1] != "staged through the host"]
sizes = sorted({r[0] for r in frames}, key=lambda s: ["1080p", "4K"].index(s) if s in ("1080p", "4K") else 9)
modes = []
for r in frames:
    m = r[1].split(" (")[0]
    if m not in modes:
        modes.append(m)
width = 0.8 / len(modes)
for k, mode in enumerate(modes):
    values = []
    for size in sizes:
        row = next((r for r in frames if r[0] == size and r[1].split(" (")[0] == mode), None)
        values.append(number(row[6]) if row else 0.0)
    xs = [i + (k - (len(modes) - 1) / 2) * width for i in range(len(sizes))]
    left.bar(xs, values, width, label=mode)
left.axhline(0.9, color="grey", linestyle="--", linewidth=1, label="goal 0.9")
left.set_xticks(range(len(sizes)), sizes)
left.set_ylabel("fps / GPU-busy bound")
left.set_title("render -> CUDA tone map -> Vulkan (H200)")
left.legend(fontsize=7)

# Pipelined hand-offs per second with a kernel in every frame, by frames in flight.
sync = table("pipelined hand-offs/s, a 32 MiB kernel")
n = [int(re.search(r"(\d+) in flight", r[0]).group(1)) for r in sync]
for col, name in [(1, "naive chain"), (2, "FrameSync semaphores")]:
    right.plot(n, [number(r[col]) for r in sync], marker="o", label=name)
right.set_xticks(n)
right.set_xlabel("frames in flight (one frame per crossing)")
right.set_ylabel("hand-offs per second")
right.set_title("Vulkan -> CUDA kernel -> Vulkan (H200)")
right.legend(fontsize=8)

fig.tight_layout()
fig.savefig(HERE / "results.png", dpi=110)
print("wrote", HERE / "results.png")
