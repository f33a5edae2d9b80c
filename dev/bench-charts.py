#!/usr/bin/env python3
"""The book's performance charts, drawn with matplotlib from dev/bench's accepted numbers
(dev/bench-baseline.json) into SVG files. dev/docs runs it before building the book.

  bench-charts.py OUT_DIR

- throughput.svg: every throughput row (items/s, Jobs/s, deliveries/s, req/s), one bar each;
- quota.svg: the share of each credential's quota windows the fleet used, per configuration;
- quota-windows.svg: each credential's windows through a quota run, the calls it spent
  against its limit, the budget beside round-robin (the quota bench's series);
- scale.svg: the export at each size the baseline holds (1,000,000, 4,000,000 and 10,000,000):
  time and bytes per repository, peak RSS.
A chart whose rows the baseline does not hold yet says so in its place rather than failing.
"""
import json
import pathlib
import re
import sys

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Same input, same bytes: no timestamps, no random ids.
plt.rcParams["svg.hashsalt"] = "scorecard-fleet"
plt.rcParams["font.size"] = 9
THROUGHPUT_UNITS = ("items/s", "Jobs/s", "deliveries/s", "req/s")


def short(text, width=70):
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= width else text[: width - 1] + "…"


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def empty(path, title, why):
    fig, ax = plt.subplots(figsize=(7, 1.2))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.3, why, ha="center", va="center")
    save(fig, path)


def bars(path, title, rows, xlabel=None):
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    labels = [label for label, _ in rows]
    values = [value for _, value in rows]
    ax.barh(range(len(rows)), values, color="#4c72b0")
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    for i, (_, value) in enumerate(rows):
        ax.text(value, i, f" {value:,.1f}", va="center")
    ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.margins(x=0.25)
    save(fig, path)


def throughput(rows, out):
    picked = [
        (short(f"{r['bench']}: {r['measurement']}") + f" ({r['unit']})", r["value"])
        for r in rows
        if r.get("unit") in THROUGHPUT_UNITS and isinstance(r.get("value"), (int, float))
    ]
    if not picked:
        return empty(out, "Throughput", "no throughput rows accepted yet")
    fig_rows = sorted(picked, key=lambda p: -p[1])
    bars(out, "Throughput by configuration (accepted bench rows, each in its own unit)", fig_rows)


def quota(rows, out):
    picked = []
    for r in rows:
        m = r["measurement"]
        if r["bench"] == "quota" and m.startswith("scans per credential-window"):
            config = m.split(": ", 1)[-1]
            picked.append((short(config, 60), r["value"]))
    if not picked:
        return empty(out, "GitHub quota", "no quota rows accepted yet")
    bars(out, "Share of each credential's quota windows used (100% = GitHub's limit)", picked, "%")


def quota_windows(benches, out):
    windows = benches.get("quota", {}).get("series", {}).get("windows", [])
    if not windows:
        return empty(out, "A credential's quota windows",
                     "no windows accepted yet: the quota bench records them from its next run")
    panels = sorted({(w["pool"], w["rule"]) for w in windows})
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), sharex=True,
                             squeeze=False)
    for ax, (pool, rule) in zip(axes[:, 0], panels):
        mine = [w for w in windows if (w["pool"], w["rule"]) == (pool, rule)]
        for credential in sorted({w["credential"] for w in mine}):
            ws = sorted((w for w in mine if w["credential"] == credential), key=lambda w: w["at_s"])
            xs = [w["at_s"] for w in ws]
            ys = [100 * w["calls"] / w["limit"] for w in ws]
            line, = ax.step(xs, ys, where="post", label=credential)
            dry = [(x, y) for x, y, w in zip(xs, ys, ws) if w["calls"] >= w["limit"]]
            if dry:
                ax.plot(*zip(*dry), "x", color=line.get_color())
        ax.axhline(100, color="grey", linewidth=0.8, linestyle="--")
        ax.set_ylabel("% of its limit")
        ax.set_title(f"{rule}: {pool}", loc="left")
        ax.legend(fontsize=7, loc="lower right", ncol=4)
        ax.set_ylim(0, 115)
    axes[-1, 0].set_xlabel("seconds into the run (each step a window; x: the window ran dry)")
    fig.suptitle("Each credential's quota windows: calls spent against its limit")
    save(fig, out)


def scale(rows, out):
    sizes = {}
    for r in rows:
        m = re.match(r"export of ([\d,]+) repositories.*: wall time", r["measurement"])
        if r["bench"] == "export" and m:
            repos = int(m.group(1).replace(",", ""))
            sizes.setdefault(m.group(1), {})["time (µs/repository)"] = r["value"] / repos * 1e6
        m = re.match(r"export of ([\d,]+) repositories: peak RSS", r["measurement"])
        if r["bench"] == "export" and m:
            sizes.setdefault(m.group(1), {})["peak RSS (MB)"] = r["value"]
        m = re.match(r"latest.parquet at ([\d,]+) repositories: bytes per repository",
                     r["measurement"])
        if r["bench"] == "export" and m:
            sizes.setdefault(m.group(1), {})["latest.parquet (B/repository)"] = r["value"]
    if len(sizes) < 2:
        return empty(out, "The export by size",
                     "the baseline holds one size of the export bench so far")
    measures = sorted({k for v in sizes.values() for k in v})
    fig, axes = plt.subplots(1, len(measures), figsize=(4 * len(measures), 3.2))
    names = sorted(sizes, key=lambda s: int(s.replace(",", "")))
    for ax, measure in zip(axes, measures):
        values = [sizes[n].get(measure, 0) for n in names]
        ax.bar(range(len(names)), values, color=["#4c72b0", "#dd8452", "#55a868"][: len(names)])
        ax.set_xticks(range(len(names)), names)
        ax.set_title(measure)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:,.1f}", ha="center", va="bottom")
        ax.margins(y=0.2)
    fig.suptitle("The export at " + ", ".join(names[:-1]) + " and " + names[-1] + " repositories")
    save(fig, out)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    baseline = json.loads((ROOT / "dev" / "bench-baseline.json").read_text())
    rows = baseline["rows"]
    throughput(rows, out / "throughput.svg")
    quota(rows, out / "quota.svg")
    quota_windows(baseline.get("benches", {}), out / "quota-windows.svg")
    scale(rows, out / "scale.svg")


if __name__ == "__main__":
    main()
