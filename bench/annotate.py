"""Annotation throughput: N annotators labelling as fast as they can, over HTTP.

For each N in --clients (default 8, 32, 64) a fresh workspace gets --tasks pairwise tasks and
N annotator accounts, `prefstudio serve` starts as its own process, and N simulated annotators
(one asyncio task each, logged in with their own session cookie) loop for --seconds:
next_task, then submit_label with a random choice and margin, over Gradio's HTTP API
(POST /gradio_api/call/<name>, then read the event stream). Reported per N: labels/s and the
p50 / p95 / p99 latency of submit_label as the client sees it (request sent → result read).

Then the server is stopped and the database opened: the current labels must equal the
submits the clients saw succeed (none lost), with at most one current label per task
(overlap 1: none duplicated, no slot handed out twice).

The side-by-side baseline ("in-process") runs the same loop with N threads calling the
store directly, no HTTP and no Gradio: the floor set by DuckDB and the queue's SQL. Label
Studio and Argilla were not run: Argilla's server needs Elasticsearch, and neither is
installable next to prefstudio's pinned stack here.

    flock /work/heavy.lock python bench/annotate.py [--clients 8 32 64] [--seconds 20]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotate import store  # noqa: E402

PASSWORD = "bench-password"


def seed(db_path: Path, tasks: int, clients: int) -> None:
    """Pairwise tasks with two short Markdown answers each, and the annotator accounts."""
    with store.Store(db_path) as db:
        prompts, responses, rows = [], [], []
        for t in range(tasks):
            prompt = store.prompt_row(f"Bench question {t}: explain recursion briefly.", source="bench")
            prompts.append(prompt)
            ids = []
            for i in range(2):
                r = store.response_row(prompt["id"], f"Answer {i} to {t}: a function that calls "
                                                     f"itself.\n\n```python\ndef f(n):\n    return f(n - 1)\n```")
                responses.append(r)
                ids.append(r["id"])
            rows.append(store.task_row(prompt["id"], ids))
        store.add_prompts(db, prompts)
        store.add_responses(db, responses)
        store.add_tasks(db, rows)
        for c in range(clients):
            store.add_user(db, f"bench{c}", "annotator", PASSWORD)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workspace: Path, db_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PREFSTUDIO_WORKSPACE": str(workspace), "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "serve", "--db", str(db_path),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "Running on local URL" in line:
            break
    else:
        raise RuntimeError("the server did not start")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    return proc, f"http://127.0.0.1:{port}"


async def call(client, url: str, name: str, data: list, mode: str = "run"):
    """One call of a named endpoint.

    run:  one POST to /gradio_api/run/<name>, the result in the response.
    call: POST /gradio_api/call/<name> queues it, the event stream carries the result
          (Gradio's queue, as gradio_client and the browser use it).
    """
    if mode == "run":
        r = await client.post(f"{url}/gradio_api/run/{name}", json={"data": data})
        body = r.json()
        if r.status_code != 200 or "error" in body:
            raise RuntimeError(f"{name}: {body.get('error') or r.status_code}")
        return body["data"][0] if body["data"] else None
    r = await client.post(f"{url}/gradio_api/call/{name}", json={"data": data})
    r.raise_for_status()
    event_id = r.json()["event_id"]
    event = None
    async with client.stream("GET", f"{url}/gradio_api/call/{name}/{event_id}") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = json.loads(line[5:]) if line[5:].strip() not in ("", "null") else None
                if event == "error":
                    raise RuntimeError(f"{name}: {payload}")
                return payload[0] if payload else None
    raise RuntimeError(f"{name}: stream ended without a result")


async def annotator(url: str, user: str, until: float, latencies: list, stats: dict, rng, mode: str):
    import httpx
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(f"{url}/login", data={"username": user, "password": PASSWORD})
        r.raise_for_status()
        while time.perf_counter() < until:
            task = await call(client, url, "next_task", [], mode)
            if task is None:
                stats["empty"] += 1
                break
            ids = [resp["id"] for resp in task["responses"]]
            rng.shuffle(ids)
            ranking = [ids] if rng.random() < 0.1 else [[ids[0]], [ids[1]]]
            margin = rng.choice(["significantly", "better", "slightly", "negligibly"])
            t0 = time.perf_counter()
            try:
                await call(client, url, "submit_label", [task["id"], json.dumps(ranking), margin, ""], mode)
            except RuntimeError as err:
                stats["errors"].append(str(err))
                continue
            latencies.append(time.perf_counter() - t0)
            stats["ok"][user] = stats["ok"].get(user, 0) + 1


async def http_run(url: str, clients: int, seconds: float, mode: str) -> dict:
    latencies: list[float] = []
    stats = {"ok": {}, "errors": [], "empty": 0}
    start = time.perf_counter()
    until = start + seconds
    await asyncio.gather(*[annotator(url, f"bench{c}", until, latencies, stats, random.Random(c), mode)
                           for c in range(clients)])
    elapsed = time.perf_counter() - start
    return {"latencies": latencies, "stats": stats, "elapsed": elapsed}


def in_process_run(db_path: Path, clients: int, seconds: float) -> dict:
    """The same loop without HTTP: N threads on one Store, as the server's handlers use it."""
    latencies: list[float] = []
    ok = {}
    levels = None
    with store.Store(db_path) as db:
        levels = store.margin_levels(db)
        until = time.perf_counter() + seconds

        def worker(c):
            rng, user = random.Random(c), f"bench{c}"
            while time.perf_counter() < until:
                tid = store.next_task(db, user)
                if tid is None:
                    return
                ids = list(store.get_task(db, tid)["response_ids"])
                rng.shuffle(ids)
                t0 = time.perf_counter()
                store.submit_label(db, user, tid, [[ids[0]], [ids[1]]], margin_level="better",
                                   levels=levels)
                latencies.append(time.perf_counter() - t0)
                ok[user] = ok.get(user, 0) + 1

        start = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        elapsed = time.perf_counter() - start
        check = verify(db, ok)
    return {"latencies": latencies, "stats": {"ok": ok, "errors": [], "empty": 0},
            "elapsed": elapsed, "check": check}


def verify(db: store.Store, ok: dict) -> dict:
    """Labels in the database against the submits the clients saw succeed."""
    per_user = {r["annotator"]: r["n"] for r in db.query(
        "SELECT annotator, count(*) AS n FROM labels WHERE superseded_by IS NULL GROUP BY annotator")}
    most_per_task = db.scalar("SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM labels "
                              "WHERE superseded_by IS NULL GROUP BY task_id)")
    return {"submitted": sum(ok.values()), "in_db": sum(per_user.values()),
            "lost": sum(max(0, n - per_user.get(u, 0)) for u, n in ok.items()),
            "extra": sum(max(0, n - ok.get(u, 0)) for u, n in per_user.items()),
            "max_labels_per_task": most_per_task}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def summary(name: str, clients: int, run: dict) -> dict:
    lat = run["latencies"]
    return {"mode": name, "clients": clients, "labels": len(lat),
            "labels_per_s": len(lat) / run["elapsed"], "p50_ms": pct(lat, 0.50),
            "p95_ms": pct(lat, 0.95), "p99_ms": pct(lat, 0.99),
            "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
            "errors": len(run["stats"]["errors"]), **run["check"]}


def report(r: dict) -> None:
    print(f"{r['clients']:3d} clients  {r['mode']:10s} {r['labels_per_s']:6.1f} labels/s  "
          f"submit_label p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
          f"submitted {r['submitted']}  in db {r['in_db']}  lost {r['lost']}  extra {r['extra']}  "
          f"max labels/task {r['max_labels_per_task']}  errors {r['errors']}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--tasks", type=int, default=8000)
    p.add_argument("--modes", nargs="+", default=["run", "call"], choices=["run", "call"],
                   help="HTTP styles: run = one POST per call, call = Gradio's queue + event stream")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    results = []
    for clients in args.clients:
        for mode in args.modes:
            with tempfile.TemporaryDirectory(prefix="bench-annotate-") as tmp:
                workspace = Path(tmp)
                db_path = workspace / "prefstudio.duckdb"
                seed(db_path, args.tasks, clients)
                proc, url = start_server(workspace, db_path)
                try:
                    run = asyncio.run(http_run(url, clients, args.seconds, mode))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
                with store.Store(db_path) as db:
                    run["check"] = verify(db, run["stats"]["ok"])
                if run["stats"]["errors"]:
                    print(f"  first error: {run['stats']['errors'][0]}", file=sys.stderr)
                results.append(summary(f"http-{mode}", clients, run))
                report(results[-1])
        with tempfile.TemporaryDirectory(prefix="bench-annotate-") as tmp:
            db_path = Path(tmp) / "prefstudio.duckdb"
            seed(db_path, args.tasks, clients)
            results.append(summary("in-process", clients, in_process_run(db_path, clients, args.seconds)))
            report(results[-1])
        floor = results[-1]
        for r in results[-1 - len(args.modes):-1]:
            print(f"{clients:3d} clients  {r['mode']}/in-process throughput: "
                  f"{r['labels_per_s'] / floor['labels_per_s']:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    bad = [r for r in results if r["lost"] or r["extra"] or r["max_labels_per_task"] > 1]
    if bad:
        print(f"LABELS LOST OR DUPLICATED: {bad}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
