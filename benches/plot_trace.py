#!/usr/bin/env python3
"""Draws traced frame sequences (FrameSync's timeline, Chrome/Perfetto JSON) as one PNG:
one panel per trace, one row per track (host thread, Vulkan queues, CUDA streams), a bar
per span, over a window of the trace.

    python3 benches/plot_trace.py OUT.png TRACE.json[:LABEL[:START_MS[:WINDOW_MS]]] ...

The traces come from `demo --trace FILE` or the frames bench with VKCUDA_TRACE_DIR set.
Needs matplotlib (pip install matplotlib).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {
    "produce": "#4c72b0",
    "consume": "#55a868",
    "CUDA work": "#dd8452",
}


def colour(name):
    for prefix, c in COLOURS.items():
        if name.startswith(prefix):
            return c
    return "#999999"


def load(path):
    events = json.load(open(path))["traceEvents"]
    names = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
    spans = [e for e in events if e.get("ph") == "X"]
    return names, spans


def panel(ax, path, label, start_ms, window_ms):
    names, spans = load(path)
    gpu = [s for s in spans if s["pid"] != 1]
    t0 = min(s["ts"] for s in (gpu or spans)) + start_ms * 1e3
    t1 = t0 + window_ms * 1e3
    tracks = sorted({(s["pid"], s["tid"]) for s in spans})
    rows = {t: i for i, t in enumerate(reversed(tracks))}
    for s in spans:
        if s["ts"] + s["dur"] < t0 or s["ts"] > t1:
            continue
        y = rows[(s["pid"], s["tid"])]
        ax.broken_barh(
            [((s["ts"] - t0) / 1e3, max(s["dur"], 0.5) / 1e3)],
            (y - 0.35, 0.7),
            facecolors=colour(s["name"]),
        )
    ax.set_yticks(list(rows.values()))
    ax.set_yticklabels([names.get(t, str(t)) for t in rows])
    ax.set_xlim(0, window_ms)
    ax.set_xlabel("ms")
    ax.set_title(label, fontsize=10)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, specs = sys.argv[1], sys.argv[2:]
    fig, axes = plt.subplots(len(specs), 1, figsize=(11, 2.6 * len(specs)), squeeze=False)
    for ax, spec in zip(axes[:, 0], specs):
        parts = spec.split(":")
        path = parts[0]
        label = parts[1] if len(parts) > 1 else path
        start = float(parts[2]) if len(parts) > 2 else 0.0
        window = float(parts[3]) if len(parts) > 3 else 5.0
        panel(ax, path, label, start, window)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    fig.legend(handles, list(COLOURS), loc="upper right", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(out, dpi=110)
    print("wrote", out)


if __name__ == "__main__":
    main()
