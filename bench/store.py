"""Store benchmarks: rankings → pairs in DuckDB SQL vs pandas, and JSONL import throughput.

    flock /work/heavy.lock python bench/store.py                # both, full size
    python bench/store.py --rankings 20000 --import-rows 10000  # a quick look

1. Pair expansion. N labels each rank K=4 responses with random ties (each of the 3 gaps
   between neighbours is a tie with probability --tie). prefstudio expands them with the
   store's own SQL (``store.label_pairs_table``: the CTE that ``store.pairs`` aggregates);
   the peer is idiomatic pandas (explode the tie groups, explode the ids, self-merge on the
   label, keep earlier-group → later-group). Both start from their data already loaded
   (a DuckDB table; a DataFrame), produce the same four columns (label, chosen, rejected,
   rank gap) as an Arrow table / a DataFrame, and must give the identical set of rows.
   Reports the time ratio, and for reference the SQL producing all 16 label-pair columns
   (annotator, source, margin, shown positions...).

2. Import throughput. A --import-rows line JSONL file imported with ``formats.import_file``
   into a fresh database (read, validate every row, content ids, one transaction, close).
   Formats: pairs (TRL prompt/chosen/rejected/margin: 5 database rows a line), prompts
   (1 row a line), responses (4 candidates: 6 rows a line). For scale, the peer is DuckDB
   loading the same file with ``read_json`` into one raw table with no validation or ids.

3. Batched generation (tokens/s vs one prompt at a time) lives in bench/generate.py, next
   to the generation code it measures.

4. How cost grows at a million rows and more (pairs at 1M and 10M labels, import at 1M lines,
   the queue and the server's memory at 1M tasks) is bench/scale.py.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import duckdb  # noqa: E402
import pandas as pd  # noqa: E402

from annotate import formats, store  # noqa: E402


def timed(fn, repeat: int):
    """Best wall time of ``repeat`` runs (the machine is shared: the minimum is the least noisy)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


# --- 1. rankings → pairs ----------------------------------------------------------------------

def random_ranking(ids: list[str], tie: float, rng: random.Random) -> list[list[str]]:
    order = ids[:]
    rng.shuffle(order)
    groups = [[order[0]]]
    for rid in order[1:]:
        if rng.random() < tie:
            groups[-1].append(rid)
        else:
            groups.append([rid])
    return groups


def build_rankings_db(path: Path, n: int, tie: float, seed: int = 0) -> store.Store:
    rng = random.Random(seed)
    db = store.Store(path)
    prompts, responses, tasks, labels = [], [], [], []
    for i in range(n):
        p = store.prompt_row(f"prompt {i}")
        rs = [store.response_row(p["id"], f"response {j} to prompt {i}") for j in range(4)]
        t = store.task_row(p["id"], [r["id"] for r in rs])
        lab = store.label_row(t, "bench", random_ranking(t["response_ids"], tie, rng),
                              label_id=f"L{i:07d}")
        prompts.append(p)
        responses += rs
        tasks.append(t)
        labels.append(lab)
    store.write_batch(db, prompts=prompts, responses=responses, tasks=tasks, labels=labels)
    return db


def pandas_label_pairs(labels: pd.DataFrame) -> pd.DataFrame:
    """Idiomatic pandas: one row per (label, group), then per (label, group, id), self-merge."""
    groups = labels[["label_id", "ranking"]].explode("ranking", ignore_index=True)
    groups["gi"] = groups.groupby("label_id").cumcount()
    flat = groups.explode("ranking", ignore_index=True).rename(columns={"ranking": "rid"})
    both = flat.merge(flat, on="label_id", suffixes=("_a", "_b"))
    both = both[both["gi_a"] < both["gi_b"]]
    return pd.DataFrame({"label_id": both["label_id"].to_numpy(), "chosen_id": both["rid_a"].to_numpy(),
                         "rejected_id": both["rid_b"].to_numpy(),
                         "rank_gap": (both["gi_b"] - both["gi_a"]).to_numpy()})


def bench_pairs(n: int, tie: float, repeat: int, tmp: Path) -> dict:
    t0 = time.perf_counter()
    db = build_rankings_db(tmp / "rankings.duckdb", n, tie)
    setup = time.perf_counter() - t0
    labels = pd.DataFrame({"label_id": r["id"], "ranking": [list(g) for g in r["ranking"]]}
                          for r in db.query("SELECT id, ranking FROM labels"))
    key = ["label_id", "chosen_id", "rejected_id", "rank_gap"]
    sql_s, sql_table = timed(lambda: store.label_pairs_table(db, columns=key), repeat)
    pd_s, pd_frame = timed(lambda: pandas_label_pairs(labels), repeat)
    all_s, _ = timed(lambda: store.label_pairs_table(db), repeat)
    a = sql_table.select(key).to_pandas().sort_values(key, ignore_index=True)
    b = pd_frame.sort_values(key, ignore_index=True).astype(a.dtypes.to_dict())
    identical = a.equals(b)
    ties = int(db.scalar("SELECT count(*) FROM labels WHERE len(ranking) < 4"))
    db.close()
    return {"rankings": n, "k": 4, "tie_prob": tie, "labels_with_ties": ties, "pairs": len(a),
            "duckdb_s": round(sql_s, 3), "pandas_s": round(pd_s, 3),
            "duckdb_all_columns_s": round(all_s, 3),
            "ratio": round(pd_s / sql_s, 1), "identical": identical, "setup_s": round(setup, 1),
            "duckdb_threads": duckdb.execute("SELECT current_setting('threads')").fetchall()[0][0]}


# --- 2. import throughput ---------------------------------------------------------------------

WORDS = ("the a cat dog sun moon tea coffee code python list sort number write story poem help "
         "explain why how because answer question good bad kind short long simple").split()


def write_import_file(path: Path, fmt: str, n: int, seed: int = 0) -> int:
    """n lines of the format; returns how many database rows one line makes."""
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    with open(path, "w") as f:
        for i in range(n):
            prompt = f"q{i}: {text(12)}?"
            if fmt == "pairs":
                row = {"prompt": prompt, "chosen": text(40), "rejected": text(40),
                       "margin": rng.choice([0, 1 / 3, 2 / 3, 1])}
            elif fmt == "prompts":
                row = {"prompt": prompt, "tags": ["bench"]}
            else:  # responses: four candidates → one ranking task
                row = {"prompt": prompt, "responses": [text(40) for _ in range(4)], "model": "bench"}
            f.write(json.dumps(row) + "\n")
    return {"pairs": 5, "prompts": 1, "responses": 6}[fmt]


def bench_import(fmt: str, n: int, repeat: int, tmp: Path) -> dict:
    path = tmp / f"{fmt}.jsonl"
    rows_per_line = write_import_file(path, fmt, n)
    runs = iter(range(repeat))

    def prefstudio_import():
        with store.Store(tmp / f"import-{fmt}-{next(runs)}.duckdb") as db:   # closing = checkpoint
            return formats.import_file(db, path)

    ours_s, result = timed(prefstudio_import, repeat)
    written = {k: result[k] for k in ("prompts", "responses", "tasks", "labels")}
    assert sum(written.values()) == rows_per_line * n, written
    raw = iter(range(repeat))

    def duckdb_raw():
        con = duckdb.connect(str(tmp / f"raw-{fmt}-{next(raw)}.duckdb"))
        con.execute("CREATE TABLE raw AS SELECT * FROM read_json(?, format = 'newline_delimited')", [str(path)])
        rows = con.execute("SELECT count(*) FROM raw").fetchall()[0][0]
        con.close()
        return rows

    raw_s, raw_rows = timed(duckdb_raw, repeat)
    return {"format": fmt, "lines": n, "file_mb": round(path.stat().st_size / 1e6, 1),
            "prefstudio_s": round(ours_s, 2), "lines_per_s": round(n / ours_s),
            "db_rows_per_s": round(rows_per_line * n / ours_s), "written": written,
            "duckdb_read_json_s": round(raw_s, 2), "slowdown_vs_raw_load": round(ours_s / raw_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rankings", type=int, default=200_000)
    ap.add_argument("--tie", type=float, default=0.3, help="probability of a tie between neighbours")
    ap.add_argument("--import-rows", type=int, default=100_000)
    ap.add_argument("--import-formats", default="pairs,prompts,responses")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["pairs", "import"])
    args = ap.parse_args()
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
          "(other people's work on a shared machine slows both sides)", flush=True)
    with tempfile.TemporaryDirectory(prefix="prefstudio-bench-") as tmp:
        if args.only in (None, "pairs"):
            r = bench_pairs(args.rankings, args.tie, args.repeat, Path(tmp))
            print(json.dumps({"bench": "rankings_to_pairs", **r}), flush=True)
            print(f"rankings→pairs: DuckDB SQL {r['duckdb_s']} s, pandas {r['pandas_s']} s, "
                  f"ratio {r['ratio']}×, identical={r['identical']}", flush=True)
        if args.only in (None, "import"):
            for fmt in args.import_formats.split(","):
                r = bench_import(fmt, args.import_rows, args.repeat, Path(tmp))
                print(json.dumps({"bench": "import_jsonl", **r}), flush=True)
                print(f"import {fmt}: {r['lines']} lines in {r['prefstudio_s']} s = {r['lines_per_s']} "
                      f"lines/s, {r['db_rows_per_s']} database rows/s "
                      f"({r['slowdown_vs_raw_load']}× a raw DuckDB read_json load)", flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
