#!/usr/bin/env python3
"""dev/bench's tables: the bench programs' JSON merged, a run beside its accepted baseline.

  bench-compare.py merge TARGET NAME...  target/bench-NAME.json -> one table and target/bench.json
  bench-compare.py compare [TARGET]      target/bench.json beside dev/bench-baseline.json;
                                         exit 1 when a row is flagged
  bench-compare.py accept [TARGET]       target/bench.json into dev/bench-baseline.json
  bench-compare.py --self-test           the compare and accept logic on synthetic runs

Direction: each row says itself which way is better (`better`: "higher" or "lower", written by
tests/src/report.rs for every row). A baseline row may carry `"override": {"better": "lower",
"tolerance": 0.5}`, edited by hand: it wins over the row's own `better`, its tolerance over the
default 20% (null: never flagged, e.g. a count whose baseline is 0), and `accept` keeps it. A row is flagged when it is worse than its baseline by more
than its tolerance in its direction; a row with no direction or no number is listed, never
flagged. Accepting a run replaces the rows of the benches it ran and keeps the others', each
bench with the date and machine it was measured on.
"""
import contextlib
import datetime
import io
import json
import math
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASELINE = ROOT / "dev" / "bench-baseline.json"
TOLERANCE = 0.20
# The machine facts that make two runs comparable, named as tests/src/report.rs host() names them.
HOST_KEYS = ("cpu", "cores (nproc)", "memory")


def host():
    """This machine as report::host() describes it (for benches whose JSON does not)."""
    def field(path, name):
        try:
            lines = pathlib.Path(path).read_text().splitlines()
        except OSError:
            return None
        return next((l[len(name):].strip(" \t:") for l in lines if l.startswith(name)), None)
    mem = field("/proc/meminfo", "MemTotal")
    return {"cores (nproc)": str(len(os.sched_getaffinity(0))),
            "memory": f"{int(mem.split()[0]) / 1024**2:.1f} GiB" if mem else "unknown",
            "cpu": field("/proc/cpuinfo", "model name") or "unknown"}


def num(x):
    """As report::number: two decimals below 10, one below 100, thousands separators above."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "—"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 100 else f"{x:,.0f}"


def amount(x, unit):
    return num(x) if num(x) == "—" else f"{num(x)} {unit}"


def what(row):
    return row.get("measurement", row.get("what", "?"))


def key(row):
    return (row["bench"], what(row))


def load(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        print(f"bench: {path} does not exist" + (
            "; `dev/bench accept` after a run creates it" if path == BASELINE else ""), file=sys.stderr)
        sys.exit(2)


def merge(target, names):
    """The benches' JSON of this run as one table and target/bench.json."""
    run = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": host(), "benches": {}, "rows": []}
    for name in names:
        path = target / f"bench-{name}.json"
        data = json.loads(path.read_text())
        mtime = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
        run["benches"][name] = {"date": data.get("finished_at") or mtime.isoformat(timespec="seconds"),
                                "seconds": data.get("seconds"),
                                "machine": {**host(), **data.get("machine", {})}}
        # Data a bench keeps for the book's charts (the quota bench's windows), not compared.
        if "series" in data:
            run["benches"][name]["series"] = data["series"]
        run["machine"].update(data.get("machine", {}))
        run["rows"] += [dict(r, bench=name) for r in data.get("rows", [])]
    print("\n# scorecard-fleet benchmarks\n")
    for k, v in run["machine"].items():
        print(f"- {k}: {v}")
    print("\n| measurement | result | baseline (same run) | target |\n|---|---|---|---|")
    for r in run["rows"]:
        unit = r.get("unit", "")
        target_text = "" if r.get("target") is None else num(r["target"])
        print(f"| {what(r)} | {amount(r.get('value'), unit)} | {amount(r.get('baseline'), unit)} | {target_text} |")
    (target / "bench.json").write_text(json.dumps(run, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwritten to {target / 'bench.json'}")


def judge(row, base):
    """(change of the value in %, flag) of a run's row against its baseline row."""
    over = base.get("override", {})
    better = over.get("better") or row.get("better") or base.get("better")
    tolerance = over.get("tolerance", TOLERANCE)
    value, old = row.get("value"), base.get("value")
    if num(value) == "—" or num(old) == "—":
        return None, "no number"
    diff = value - old
    change = diff / abs(old) * 100 if old else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    if better not in ("higher", "lower"):
        return change, "direction unknown"
    if tolerance is None:
        return change, "not gated (override)"
    worse = -change if better == "higher" else change
    return change, f"WORSE >{tolerance:.0%}" if worse > tolerance * 100 else ""


def compare(run, baseline):
    """Every row of the run beside its baseline: (lines, benches of the baseline not run)."""
    base_rows = {key(r): r for r in baseline.get("rows", [])}
    ran = set(run.get("benches") or ()) | {r["bench"] for r in run["rows"]}
    lines, seen = [], set()
    for r in run["rows"]:
        seen.add(key(r))
        base = base_rows.get(key(r))
        change, flag = judge(r, base) if base else (None, "new: not in the baseline")
        lines.append({"bench": r["bench"], "measurement": what(r), "unit": r.get("unit", ""),
                      "value": r.get("value"), "baseline": base and base.get("value"),
                      "better": ((base or {}).get("override", {}).get("better")
                                 or r.get("better") or "?"),
                      "change": change, "flag": flag})
    for k, b in base_rows.items():
        if b["bench"] in ran and k not in seen:
            lines.append({"bench": b["bench"], "measurement": what(b), "unit": b.get("unit", ""),
                          "value": None, "baseline": b.get("value"), "better": b.get("better", "?"),
                          "change": None, "flag": "missing: in the baseline, not in this run"})
    not_run = sorted({b["bench"] for b in base_rows.values()} - ran)
    return lines, not_run


def hardware(machine):
    return ", ".join(f"{k} {machine.get(k, '?')}" for k in HOST_KEYS)


def print_compare(run, baseline):
    """Prints the comparison; returns 1 when a row is flagged, else 0."""
    lines, not_run = compare(run, baseline)
    print(f"\n# scorecard-fleet benchmarks against the baseline ({BASELINE.name})\n")
    print(f"- this run: {run.get('date', '?')}: {hardware(run.get('machine', {}))}")
    for name, b in baseline.get("benches", {}).items():
        print(f"- baseline {name}: {b.get('date', '?')}: {hardware(b.get('machine', {}))}")
    for name, b in baseline.get("benches", {}).items():
        mine = run.get("benches", {}).get(name, {}).get("machine") or run.get("machine", {})
        if name in run.get("benches", {}) and any(
                mine.get(k) != b.get("machine", {}).get(k) for k in HOST_KEYS):
            print(f"- WARNING: {name} ran on another machine than its baseline "
                  f"({hardware(mine)} against {hardware(b.get('machine', {}))})")
    print("\n| bench | measurement | this run | baseline | change | better | |\n|---|---|---|---|---|---|---|")
    for l in lines:
        change = "—" if l["change"] is None else f"{l['change']:+.1f}%"
        print(f"| {l['bench']} | {l['measurement']} | {amount(l['value'], l['unit'])} | "
              f"{amount(l['baseline'], l['unit'])} | {change} | {l['better']} | {l['flag']} |")
    flagged = [l for l in lines if l["flag"].startswith("WORSE")]
    if not_run:
        print(f"\nin the baseline, not run this time: {', '.join(not_run)}")
    print(f"\n{len(flagged)} of {len(lines)} rows worse than the baseline beyond their tolerance")
    return 1 if flagged else 0


def accept(run, old):
    """The new baseline: the run's rows for the benches it ran, the old rows for the others."""
    ran = run.get("benches", {})
    overrides = {key(r): r["override"] for r in old.get("rows", []) if "override" in r}
    benches = {**old.get("benches", {}), **ran}  # an old bench keeps its place, a new one is appended
    rows = {name: [r for r in old.get("rows", []) if r["bench"] == name] for name in benches}
    for name in ran:
        rows[name] = []
    for r in run["rows"]:
        row = {"bench": r["bench"], "measurement": what(r), "unit": r.get("unit", ""),
               "better": r.get("better"), "value": r.get("value")}
        if key(r) in overrides:
            row["override"] = overrides[key(r)]
        rows[r["bench"]].append(row)
    return {"about": "dev/bench's accepted numbers: `dev/bench compare` flags rows worse than "
                     "these; `dev/bench accept` replaces the rows of the benches a run ran. A row's "
                     "\"override\": {\"better\": \"higher\"|\"lower\", \"tolerance\": 0.2} is kept.",
            "benches": benches, "rows": [r for name in benches for r in rows[name]]}


def write_accepted(target, baseline_path):
    run = load(target / "bench.json")
    old = json.loads(baseline_path.read_text()) if baseline_path.exists() else {}
    new = accept(run, old)
    baseline_path.write_text(json.dumps(new, indent=2, ensure_ascii=False) + "\n")
    kept = sorted(set(new["benches"]) - set(run.get("benches", {})))
    print(f"accepted {', '.join(run.get('benches', {})) or 'nothing'} into {baseline_path}"
          + (f"; kept the earlier baseline of {', '.join(kept)}" if kept else ""))


def self_test():
    def row(bench, m, value, better="higher"):
        return {"bench": bench, "measurement": m, "unit": "u", "value": value, "better": better}
    xeon = {"cpu": "Xeon", "cores (nproc)": "2", "memory": "23.6 GiB"}
    baseline = {"benches": {"a": {"date": "d0", "machine": xeon}, "b": {"date": "d0", "machine": xeon}},
                "rows": [row("a", "up 25% worse", 100), row("a", "down 25% worse", 100, "lower"),
                         row("a", "up 15% worse", 100), row("a", "down 15% worse", 100, "lower"),
                         row("a", "up 25% better", 100), row("a", "down 25% better", 100, "lower"),
                         row("a", "gone", 1),
                         dict(row("a", "tolerant", 100), override={"tolerance": 0.5}),
                         dict(row("a", "flipped", 100), override={"better": "lower"}),
                         row("a", "zero", 0, "lower"), row("a", "nan", 1), row("b", "other bench", 7),
                         dict(row("a", "ungated", 0, "lower"), override={"tolerance": None})]}
    run = {"date": "d1", "machine": dict(xeon, cpu="EPYC"),
           "benches": {"a": {"date": "d1", "machine": dict(xeon, cpu="EPYC")}},
           "rows": [row("a", "up 25% worse", 75), row("a", "down 25% worse", 125, "lower"),
                    row("a", "up 15% worse", 85), row("a", "down 15% worse", 115, "lower"),
                    row("a", "up 25% better", 125), row("a", "down 25% better", 75, "lower"),
                    row("a", "tolerant", 60), row("a", "flipped", 130), row("a", "zero", 1, "lower"),
                    row("a", "nan", None), row("a", "brand new", 3), row("a", "ungated", 5, "lower")]}
    lines, not_run = compare(run, baseline)
    flags = {l["measurement"]: l["flag"] for l in lines}
    assert flags == {"up 25% worse": "WORSE >20%", "down 25% worse": "WORSE >20%",
                     "up 15% worse": "", "down 15% worse": "", "up 25% better": "",
                     "down 25% better": "", "tolerant": "", "flipped": "WORSE >20%",
                     "zero": "WORSE >20%", "nan": "no number", "ungated": "not gated (override)",
                     "brand new": "new: not in the baseline",
                     "gone": "missing: in the baseline, not in this run"}, flags
    assert not_run == ["b"], not_run
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert print_compare(run, baseline) == 1
        assert print_compare({**run, "rows": run["rows"][2:6]}, baseline) == 0
    assert "WARNING: a ran on another machine" in out.getvalue(), out.getvalue()
    new = accept(run, baseline)
    assert [r["bench"] for r in new["rows"]] == ["a"] * 12 + ["b"], new["rows"]
    assert new["benches"]["a"]["date"] == "d1" and new["benches"]["b"]["date"] == "d0"
    assert {r["measurement"]: r.get("override") for r in new["rows"]}["tolerant"] == {"tolerance": 0.5}
    assert "gone" not in {r["measurement"] for r in new["rows"]}
    # merge then accept through files: only the named benches' JSON, the machine filled in.
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        target = pathlib.Path(tmp)
        for name in ("a", "stale"):
            (target / f"bench-{name}.json").write_text(json.dumps(
                {"machine": {"load": "1"}, "series": {"windows": [{"calls": 3}]},
                 "rows": [{"measurement": "x", "unit": "u", "value": 1.0, "better": "lower"}]}))
        merge(target, ["a"])
        write_accepted(target, target / "baseline.json")
        saved = json.loads((target / "baseline.json").read_text())
        assert list(saved["benches"]) == ["a"] and saved["benches"]["a"]["machine"]["load"] == "1"
        assert set(HOST_KEYS) <= set(saved["benches"]["a"]["machine"]), saved
        assert saved["benches"]["a"]["series"] == {"windows": [{"calls": 3}]}, saved
        assert saved["rows"] == [{"bench": "a", "measurement": "x", "unit": "u", "better": "lower",
                                  "value": 1.0}], saved["rows"]
    print("bench-compare self-test: ok")
    return 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if len(argv) >= 2 and argv[0] == "merge":
        return merge(pathlib.Path(argv[1]), argv[2:]) or 0
    if len(argv) in (1, 2) and argv[0] in ("compare", "accept"):
        target = pathlib.Path(argv[1]) if len(argv) == 2 else ROOT / "target"
        if argv[0] == "accept":
            return write_accepted(target, BASELINE) or 0
        return print_compare(load(target / "bench.json"), load(BASELINE))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
