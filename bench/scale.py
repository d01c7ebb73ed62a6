"""How cost grows with the store: rankings → pairs, import, the queue and the server's memory at
a million rows and more (bench/store.py points here).

Synthetic rows are made by DuckDB SQL (seconds for millions of rows, no Python loop), with
DuckDB held to --memory-limit so the whole run stays under ~8 GB.

1. Rankings → pairs at each --pair-sizes N labels: each ranks K=4 responses (a random order,
   each of the 3 gaps a tie with probability 0.3), one label per task. Timed: the store's own
   SQL (``store.label_pairs_table``'s CTEs, the four key columns), evaluated to the end by
   DuckDB (count and sum over every pair: no result set in Python at 10M labels); at the
   smallest size also as the Arrow table ``label_pairs_table`` hands back. Cost per pair at each
   size and its growth against the smallest size (aim ≤ 1.2×).
2. Import of --import-lines lines of TRL pairs JSONL (prompt/chosen/rejected/margin; the
   file written by DuckDB's COPY), with ``formats.import_file`` in a fresh process: seconds,
   lines/s, that process's peak RSS.
3. The queue and the server with --queue-sizes N tasks (prompts, 2 responses each, overlap 2)
   and N labels (one per task, 50 annotators): ``prefstudio serve`` on it as its own process;
   one annotator logs in and loops next_task → submit_label over HTTP (the JSON route) for
   --queue-calls labels: first next_task (the studio loads the queue's index from the tables
   in the background from its start; this call waits for what is left of that load), then
   next_task p50/p95 and submit p50/p95; then a second annotator who has labelled nothing
   asks for a first task; and the server's peak RSS (VmHWM).

The pairs queries run --repeats times, the import and each queue server --slow-repeats times
(median [min-max]).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from annotate import store  # noqa: E402
from annotate.store.pairs import _label_pairs_sql  # noqa: E402
from bench.sides import load_line, show  # noqa: E402

KEY = ["label_id", "chosen_id", "rejected_id", "rank_gap"]
# the 8 tie patterns of 3 gaps (bit g set: gap g+1 is a tie) and the 24 orders of 4 positions
SHAPES_SQL = """
CREATE TEMP TABLE shapes AS
WITH perms AS (
    SELECT row_number() OVER () - 1 AS perm_id, [a, b, c, d] AS p
    FROM range(1, 5) x(a), range(1, 5) y(b), range(1, 5) z(c), range(1, 5) w(d)
    WHERE a NOT IN (b, c, d) AND b NOT IN (c, d) AND c != d),
patterns AS (SELECT range AS pattern FROM range(8))
SELECT perm_id * 8 + pattern AS shape,
       -- tie groups of positions: a new group starts after every gap that is not a tie
       list_transform(
           list_filter(range(1, 5), lambda s: s = 1 OR (pattern >> (s - 2)) & 1 = 0),
           lambda s: list_transform(
               list_filter(range(s, 5), lambda j: j = s OR
                   list_bool_and(list_transform(range(s, j), lambda g: (pattern >> (g - 1)) & 1 = 1))),
               lambda j: p[j])) AS groups
FROM perms, patterns
"""


def connect(path: Path, memory: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute(f"SET memory_limit = '{memory}'")
    return con


def make_ranking_labels(path: Path, n: int, memory: str) -> float:
    """n labels with K=4 random rankings (ties 0.3 per gap) straight into the labels table."""
    store.Store(path).close()   # the schema
    con = connect(path, memory)
    start = time.perf_counter()
    con.execute(SHAPES_SQL)
    con.execute(f"""
        INSERT INTO labels (id, task_id, annotator, source, ranking, created_at)
        WITH u AS (SELECT i, hash(i, 1) % 1000 < 300 AS t1, hash(i, 2) % 1000 < 300 AS t2,
                          hash(i, 3) % 1000 < 300 AS t3, hash(i, 4) % 24 AS perm
                   FROM range({n}) r(i))
        SELECT 'L' || i, 'T' || i, 'bench', 'human',
               list_transform(s.groups, lambda g: list_transform(g, lambda p: 'T' || i || '-r' || p)),
               TIMESTAMP '2026-01-01'
        FROM u JOIN shapes s ON s.shape = perm * 8 + t1::INT + 2 * t2::INT + 4 * t3::INT""")
    con.close()
    return time.perf_counter() - start


def bench_pairs(sizes: list[int], repeats: int, tmp: Path, memory: str) -> list[dict]:
    rows = []
    for n in sizes:
        path = tmp / f"pairs-{n}.duckdb"
        made = make_ranking_labels(path, n, memory)
        con = connect(path, memory)
        sql = _label_pairs_sql("", KEY)
        counted, times = None, []
        for _ in range(repeats):
            start = time.perf_counter()
            counted = con.execute(sql + "SELECT count(*), sum(rank_gap) FROM label_pairs").fetchall()[0]
            times.append(time.perf_counter() - start)
        arrow = []
        if n == sizes[0]:
            for _ in range(repeats):
                start = time.perf_counter()
                table = con.sql(sql + f"SELECT {', '.join(KEY)} FROM label_pairs").to_arrow_table()
                arrow.append(time.perf_counter() - start)
                assert table.num_rows == counted[0]
                del table
        con.close()
        path.unlink()
        rows.append({"labels": n, "pairs": counted[0], "made_s": made, "seconds": times,
                     "arrow_seconds": arrow})
        print(f"pairs {n:>10,} labels → {counted[0]:,} pairs: {show(times, ' s', 3)}"
              + (f"; as Arrow {show(arrow, ' s', 3)}" if arrow else "")
              + f" (rows made in {made:.1f} s)", flush=True)
    base = min(rows[0]["seconds"]) / rows[0]["pairs"]
    for r in rows:
        per = [t / r["pairs"] * 1e9 for t in r["seconds"]]
        r["ns_per_pair"] = per
        print(f"  {r['labels']:>10,} labels: {show(per, ' ns/pair')}, growth against "
              f"{rows[0]['labels']:,}: {min(r['seconds']) / r['pairs'] / base:.2f}x (best runs)")
    return rows


IMPORT_CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from annotate import formats, store
start = time.perf_counter()
with store.Store(sys.argv[2]) as db:
    result = formats.import_file(db, sys.argv[3])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "written": {k: result[k] for k in ("prompts", "responses", "tasks", "labels")},
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_import(lines: int, repeats: int, tmp: Path, memory: str) -> dict:
    path = tmp / "pairs.jsonl"
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory}'")
    words = "['the','a','cat','dog','sun','moon','tea','code','python','list','sort','write','story','why']"
    text = lambda k, salt: (f"array_to_string(list_transform(range({k}), lambda w: {words}"  # noqa: E731
                            f"[(1 + hash(i, w, {salt}) % 14)::BIGINT]), ' ')")
    con.execute(f"""COPY (SELECT 'q' || i || ': ' || {text(12, 1)} || '?' AS prompt,
                                 {text(40, 2)} AS chosen, {text(40, 3)} AS rejected,
                                 [0, 1/3, 2/3, 1][(1 + hash(i) % 4)::BIGINT] AS margin
                          FROM range({lines}) r(i)) TO '{path}' (FORMAT json)""")
    con.close()
    runs = []
    for r in range(repeats):
        db = tmp / f"import-{r}.duckdb"
        out = subprocess.run([sys.executable, "-c", IMPORT_CHILD, str(ROOT), str(db), str(path)],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        db.unlink()
    secs = [x["seconds"] for x in runs]
    print(f"import {lines:,} lines ({path.stat().st_size / 1e6:.0f} MB): {show(secs, ' s')}, "
          f"{show([lines / s for s in secs], ' lines/s', 0)}, peak RSS "
          f"{show([x['peak_rss_mb'] for x in runs], ' MB', 0)}; written {runs[0]['written']}", flush=True)
    path.unlink()
    return {"lines": lines, "runs": runs}


def make_queue_store(path: Path, n: int, memory: str) -> None:
    """n pairwise tasks (overlap 2) with their prompts and 2 responses, n labels (one per task,
    from 50 annotators), and the annotator who will label: all by SQL."""
    with store.Store(path) as db:
        store.add_user(db, "probe", "annotator", "probe-password")
        store.add_user(db, "newcomer", "annotator", "newcomer-password")
    con = connect(path, memory)
    con.execute(f"""INSERT INTO prompts (id, messages, source)
        SELECT 'P' || i, '[{{"role": "user", "content": "Question ' || i || ': explain recursion briefly."}}]',
               'bench' FROM range({n}) r(i)""")
    con.execute(f"""INSERT INTO responses (id, prompt_id, text)
        SELECT 'P' || i || '-r' || j, 'P' || i, 'Answer ' || j || ' to ' || i || ': a function that calls itself.'
        FROM range({n}) r(i), range(2) s(j)""")
    con.execute(f"""INSERT INTO tasks (id, prompt_id, response_ids, kind, required_labels)
        SELECT 'T' || i, 'P' || i, ['P' || i || '-r0', 'P' || i || '-r1'], 'pairwise', 2
        FROM range({n}) r(i)""")
    con.execute(f"""INSERT INTO labels (id, task_id, annotator, source, ranking, margin_level, created_at)
        SELECT 'L' || i, 'T' || i, 'ann' || (i % 50), 'human',
               [['P' || i || '-r' || (i % 2)], ['P' || i || '-r' || (1 - i % 2)]], 'better',
               TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND
        FROM range({n}) r(i)""")
    con.close()


async def logged_in(port: int, user: str):
    from urllib.parse import urlencode

    from bench.annotate import Http
    http = Http(port)
    await http.open()
    status, _ = await http.request("POST", "/login", urlencode(
        {"username": user, "password": f"{user}-password"}).encode(), "application/x-www-form-urlencoded")
    assert status == 200, status
    return http


async def probe_queue(port: int, calls: int) -> dict:
    http = await logged_in(port, "probe")
    nxt, sub = [], []
    for c in range(calls + 1):
        t0 = time.perf_counter()
        status, raw = await http.request("POST", "/api/next_task", b"{}")
        nxt.append(time.perf_counter() - t0)
        task = json.loads(raw)
        ids = [r["id"] for r in task["responses"]]
        t0 = time.perf_counter()
        status, raw = await http.request("POST", "/api/submit_label", json.dumps(
            {"task_id": task["id"], "ranking": [[ids[0]], [ids[1]]], "margin": "better"}).encode())
        assert status == 200, raw
        sub.append(time.perf_counter() - t0)
    http.close()
    http = await logged_in(port, "newcomer")     # an annotator who has labelled nothing yet
    t0 = time.perf_counter()
    status, raw = await http.request("POST", "/api/next_task", b"{}")
    newcomer = time.perf_counter() - t0
    assert status == 200, raw
    http.close()
    return {"first_next_ms": nxt[0] * 1000, "newcomer_next_ms": newcomer * 1000,
            "next": nxt[1:], "submit": sub[1:]}


def bench_queue(sizes: list[int], calls: int, repeats: int, tmp: Path, memory: str) -> list[dict]:
    from bench.annotate import pct, start_server
    rows = []
    for n in sizes:
        path = tmp / f"queue-{n}.duckdb"
        start = time.perf_counter()
        make_queue_store(path, n, memory)
        made = time.perf_counter() - start
        runs = []
        for _ in range(repeats):
            proc, port = start_server(tmp, path)
            try:
                r = asyncio.run(probe_queue(port, calls))
                status = Path(f"/proc/{proc.pid}/status").read_text()
                r["peak_rss_mb"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
                r["rss_mb"] = int(status.split("VmRSS:")[1].split()[0]) / 1024
            finally:
                proc.terminate()
                proc.wait(timeout=120)
            runs.append(r)
        for name in ("next", "submit"):
            for r in runs:
                r[f"{name}_p50_ms"], r[f"{name}_p95_ms"] = pct(r[name], 0.5), pct(r[name], 0.95)
        rows.append({"tasks": n, "labels": n, "made_s": made,
                     "runs": [{k: v for k, v in r.items() if k not in ("next", "submit")} for r in runs]})
        pick = lambda k: [r[k] for r in runs]  # noqa: E731
        print(f"queue {n:>10,} tasks, {n:,} labels (made in {made:.0f} s): first next_task "
              f"{show(pick('first_next_ms'), ' ms')}; a newcomer's first next_task "
              f"{show(pick('newcomer_next_ms'), ' ms')}; next_task p50 {show(pick('next_p50_ms'), ' ms')}, "
              f"p95 {show(pick('next_p95_ms'), ' ms')}; submit p50 {show(pick('submit_p50_ms'), ' ms')}, "
              f"p95 {show(pick('submit_p95_ms'), ' ms')}; server peak RSS {show(pick('peak_rss_mb'), ' MB', 0)}",
              flush=True)
        path.unlink()
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair-sizes", type=int, nargs="*", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--import-lines", type=int, default=1_000_000, help="0: skip")
    ap.add_argument("--queue-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--queue-calls", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3, help="of the pairs queries")
    ap.add_argument("--slow-repeats", type=int, default=1,
                    help="of the import and of each queue server (minutes each at 1M)")
    ap.add_argument("--memory-limit", default="5GB", help="DuckDB's, for the SQL that makes rows")
    ap.add_argument("--tmp", default=None, help="where the databases go (default: the system's)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    print(load_line(), flush=True)
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.tmp) as tmp:
        if args.pair_sizes:
            out["pairs"] = bench_pairs(args.pair_sizes, args.repeats, Path(tmp), args.memory_limit)
        if args.import_lines:
            out["import"] = bench_import(args.import_lines, args.slow_repeats, Path(tmp), args.memory_limit)
        if args.queue_sizes:
            out["queue"] = bench_queue(args.queue_sizes, args.queue_calls, args.slow_repeats, Path(tmp),
                                       args.memory_limit)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
