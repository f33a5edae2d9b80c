"""Reads an export with readers no one in this project wrote, and prints what they found as JSON.

    read_export.py local DIR   DuckDB and pyarrow over the published snapshot of DIR: every
                               file's bytes, SHA-256 and rows against the manifest, and the
                               aggregates tests/tests/export.rs compares with PostgreSQL's.
    read_export.py http URL DIR  polars over HTTP (URL/data/latest.parquet, range requests) and
                               over the local file of DIR: the same aggregates from both.
"""

import glob
import hashlib
import json
import os
import sys


def published(root):
    with open(os.path.join(root, "manifest.json")) as f:
        manifest = json.load(f)
    return manifest, os.path.join(root, manifest["snapshot"])


def local(root):
    import duckdb
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    manifest, snap = published(root)
    files = []
    for entry in manifest["files"]:
        path = os.path.join(snap, entry["path"])
        data = open(path, "rb").read()
        if entry["path"].endswith(".parquet"):
            rows = pq.ParquetFile(path).metadata.num_rows
        elif entry["path"].endswith(".ndjson"):
            rows = data.count(b"\n")
        else:
            rows = 1
        files.append({
            "path": entry["path"],
            "bytes_ok": len(data) == entry["bytes"],
            "sha256_ok": hashlib.sha256(data).hexdigest() == entry["sha256"],
            "rows_ok": rows == entry["rows"],
        })

    con = duckdb.connect()
    latest = os.path.join(snap, "latest.parquet")
    checks = [f for f in pq.read_schema(latest).names
              if f not in ("repo", "owner", "name", "commit", "scanned_at", "scorecard_version",
                           "scorecard_commit", "score", "work_id", "checks")]
    means = con.execute(
        "SELECT " + ", ".join(f"avg({c})" for c in checks) + f" FROM read_parquet('{latest}')"
    ).fetchone()
    count, avg_score, maintained_low, inconclusive = con.execute(
        f"SELECT count(*), avg(score), count(*) FILTER (WHERE maintained < 3), "
        f"count(*) FILTER (WHERE score IS NULL) FROM read_parquet('{latest}')"
    ).fetchone()
    # The long form: one row per check, from the list column.
    long_means = dict(con.execute(
        f"SELECT c.name, avg(c.score) FROM (SELECT unnest(checks) AS c FROM read_parquet('{latest}')) "
        "GROUP BY c.name"
    ).fetchall())

    history_glob = os.path.join(snap, "history", "*", "*.parquet")
    by_date_duckdb = {str(d): n for d, n in con.execute(
        f"SELECT date, count(*) FROM read_parquet('{history_glob}', hive_partitioning = true) "
        "GROUP BY date"
    ).fetchall()}
    history_avg = con.execute(
        f"SELECT avg(score) FROM read_parquet('{history_glob}', hive_partitioning = true)"
    ).fetchone()[0] if glob.glob(history_glob) else None
    dataset = ds.dataset(os.path.join(snap, "history"), format="parquet", partitioning="hive")
    table = dataset.to_table(columns=["date", "score"])
    by_date_pyarrow = {}
    for d in table.column("date").to_pylist():
        by_date_pyarrow[str(d)] = by_date_pyarrow.get(str(d), 0) + 1

    events_glob = os.path.join(snap, "events", "*", "*.ndjson")
    events = con.execute(
        f"SELECT count(*), count(DISTINCT repo) FROM read_json_auto('{events_glob}')"
    ).fetchone() if glob.glob(events_glob) else (0, 0)

    # The book's pandas lines (docs/src/architecture/export.md), as written there.
    import pandas as pd
    frame = pd.read_parquet(latest)
    pandas_low = int((frame.maintained < 3).sum())
    pandas_means = {k: (None if pd.isna(v) else float(v))
                    for k, v in frame.select_dtypes("number").mean().items()}
    pandas_history = len(pd.read_parquet(os.path.join(snap, "history"))) \
        if glob.glob(history_glob) else 0

    return {
        "snapshot": manifest["snapshot"],
        "pandas": {
            "maintained_below_3": pandas_low,
            "check_means": pandas_means,
            "history_rows": pandas_history,
        },
        "files": files,
        "latest": {
            "rows": count,
            "pyarrow_rows": pq.read_table(latest).num_rows,
            "avg_score": avg_score,
            "maintained_below_3": maintained_low,
            "inconclusive": inconclusive,
            "check_means": dict(zip(checks, means)),
            "long_check_means": long_means,
        },
        "history": {
            "by_date_duckdb": by_date_duckdb,
            "by_date_pyarrow": by_date_pyarrow,
            "avg_score": history_avg,
        },
        "events": {"rows": events[0], "repos": events[1]},
    }


def polars_answers(source):
    import polars as pl

    frame = pl.scan_parquet(source)
    got = frame.select(
        pl.len().alias("rows"),
        pl.col("score").mean().alias("avg_score"),
        (pl.col("maintained") < 3).sum().alias("maintained_below_3"),
        pl.col("code_review").mean().alias("code_review_mean"),
    ).collect().to_dicts()[0]
    one = frame.filter(pl.col("maintained") < 3).select("repo").sort("repo").collect()
    got["repos_maintained_below_3"] = one.get_column("repo").to_list()
    return got


def http(url, root):
    _, snap = published(root)
    return {
        "http": polars_answers(url.rstrip("/") + "/data/latest.parquet"),
        "local": polars_answers(os.path.join(snap, "latest.parquet")),
    }


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "local":
        print(json.dumps(local(sys.argv[2])))
    elif mode == "http":
        print(json.dumps(http(sys.argv[2], sys.argv[3])))
    else:
        sys.exit(f"unknown mode {mode}")
