"""Annotation throughput: N annotators labelling as fast as they can, over HTTP.

For each N in --clients (default 8, 32, 64) a fresh workspace gets --tasks pairwise tasks and
N annotator accounts, `prefstudio serve` starts as its own process, and N simulated annotators
(one asyncio task each, logged in with their own session cookie and their own keep-alive
connection) loop for --seconds: next_task, then submit_label with a random choice and margin.
Three HTTP styles (--modes):

    rest  one POST to /api/<name> with the arguments as a JSON object (annotate/ui/rest.py:
          the same handlers, without Gradio's per-call layers);
    run   one POST to /gradio_api/run/<name>, the result in the response (the direct route);
    call  POST /gradio_api/call/<name>, then GET the event stream for the result (Gradio's
          queue, as gradio_client and the browser use it).

Reported per N: labels/s and the p50 / p95 / p99 latency of submit_label and next_task as the
client sees them (request sent → result read), and where the CPU went: the server process
(from /proc) and this load generator (its own process time), both as a share of one core.
The machine has 2 cores, shared by the server, the load generator and other people's work.

The load generator speaks HTTP/1.1 itself over asyncio streams (keep-alive, Content-Length
and chunked bodies, the event stream): httpx costs 3-4 ms of CPU per request on this
machine, more than the server, which would make the benchmark measure its own client.

Then the server is stopped and the database opened: the current labels must equal the
submits the clients saw succeed (none lost, none extra), with at most one current label per
task (overlap 1: no slot handed out twice). The script exits non-zero otherwise.

The side-by-side floor ("in-process") runs the same loop in N threads calling the studio's
service object (``annotate.ui.service.Studio``: the code behind every handler: role check,
queue, task text, label) with no HTTP and no Gradio. Label Studio and Argilla were not run:
Argilla's server needs Elasticsearch, and neither installs next to prefstudio's pinned stack.

    flock /work/heavy.lock python bench/annotate.py [--clients 8 32 64] [--seconds 20]

Queue orders (issue 18): ``--orders default uncertainty --repeats 3`` runs each order on its
own fresh workspace, A B A B A B (a loaded machine drifts: interleaving spreads the drift over
both), an active order with every task ranked first (a random permutation, stored as a
queue-order job would store it) and chosen for every round; at the end, next_task's p95 per
order (the median over the repeats) against the first order's.
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
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotate import store  # noqa: E402
from bench.sides import load_line, paired_ratio_line, show  # noqa: E402

PASSWORD = "bench-password"
MARGINS = ["significantly", "better", "slightly", "negligibly"]


def seed(db_path: Path, tasks: int, clients: int, order: str = "default") -> None:
    """Pairwise tasks with two short Markdown answers each, and the annotator accounts; under
    an active ``order``, every task ranked (a random permutation, as a queue-order job of a
    reward model would store it) and that order chosen for every round."""
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
        if order != "default":
            rank_all(db, [r["id"] for r in rows], order)


def rank_all(db: store.Store, task_ids: list[str], order: str) -> None:
    import datetime as dt
    ranked = random.Random(0).sample(task_ids, len(task_ids))
    rm = "" if order == "diverse" else "rm-bench"
    if rm:
        store.create_run(db, rm, "rm", {}, status="done")
    with db.write() as cur:
        store.priorities.write_priorities(cur, [
            {"order_name": order, "rm": rm, "task_id": t, "rank": i, "score": None, "cluster": None,
             "run_id": "queue-order-bench", "scored_at": dt.datetime.now()}
            for i, t in enumerate(ranked)])
    store.priorities.set_queue_order(db, order, rm or None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workspace: Path, db_path: Path, profile: Path | None = None,
                 root: Path = ROOT) -> tuple[subprocess.Popen, int]:
    """``prefstudio serve`` of the checkout at ``root`` as its own process; with ``profile``,
    every thread of it under pyinstrument (bench/profile_threads.py), one text profile per
    thread name there."""
    port = free_port()
    env = {**os.environ, "PREFSTUDIO_WORKSPACE": str(workspace), "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONUNBUFFERED": "1"}
    entry = [str(root / "app.py")]
    if profile is not None:
        env["PROFILE_DIR"] = str(profile)
        entry = [str(ROOT / "bench" / "profile_threads.py")]
    proc = subprocess.Popen([sys.executable, *entry, "serve", "--db", str(db_path),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "Running on local URL" in line:
            break
    else:
        raise RuntimeError("the server did not start")
    log = os.environ.get("BENCH_SERVER_LOG")   # where the server's output goes (default: nowhere)

    def drain():
        with open(log or os.devnull, "w") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()
    threading.Thread(target=drain, daemon=True).start()  # keep the pipe drained
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- a small HTTP/1.1 client -------------------------------------------------------------------

class Http:
    """One keep-alive connection with the session cookie of one logged-in annotator."""

    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, str] = {}
        # one Gradio session per client, as gradio_client and the browser keep (without it
        # Gradio builds a fresh session state, a config of every block, on every call)
        self.session_hash = os.urandom(6).hex()
        self.reconnects = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        self.writer.close()

    async def _send(self, method: str, path: str, body: bytes = b"",
                    ctype: str = "application/json") -> None:
        if self.reader.at_eof():   # the server closed it while idle (keep-alive timeout)
            self.close()
            await self.open()
            self.reconnects += 1
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        if self.cookies:
            head.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if method == "POST":
            head += [f"Content-Type: {ctype}", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    async def _head(self) -> tuple[int, dict[str, str]]:
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        status = int(line.split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
            headers[name] = value
        return status, headers

    async def _chunks(self, headers: dict[str, str]):
        if "content-length" in headers:
            yield await self.reader.readexactly(int(headers["content-length"]))
            return
        assert headers.get("transfer-encoding") == "chunked", headers
        while size := int((await self.reader.readline()).strip(), 16):
            yield await self.reader.readexactly(size)
            await self.reader.readline()
        await self.reader.readline()

    async def request(self, method: str, path: str, body: bytes = b"",
                      ctype: str = "application/json") -> tuple[int, bytes]:
        await self._send(method, path, body, ctype)
        status, headers = await self._head()
        return status, b"".join([c async for c in self._chunks(headers)])

    async def events(self, path: str):
        """GET an event stream; yields (event, data) pairs, reading the response to its end."""
        await self._send("GET", path)
        status, headers = await self._head()
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}")
        buffer, event = "", None
        async for chunk in self._chunks(headers):
            buffer += chunk.decode()
            *lines, buffer = buffer.split("\n")
            for line in lines:
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    yield event, line[5:].strip()


ARGS = {"next_task": [], "progress": [], "submit_label": ["task_id", "ranking", "margin", "rationale"]}


async def call(http: Http, name: str, data: list, mode: str):
    """One call of a named endpoint; returns its single output or raises with Gradio's error."""
    if mode == "rest":
        status, raw = await http.request("POST", f"/api/{name}",
                                         json.dumps(dict(zip(ARGS[name], data))).encode())
        out = json.loads(raw)
        if status != 200:
            raise RuntimeError(f"{name}: {out.get('error') if isinstance(out, dict) else status}")
        return out
    body = json.dumps({"data": data, "session_hash": http.session_hash}).encode()
    if mode == "run":
        status, raw = await http.request("POST", f"/gradio_api/run/{name}", body)
        out = json.loads(raw)
        if status != 200 or "error" in out:
            raise RuntimeError(f"{name}: {out.get('error') or status}")
        return out["data"][0] if out["data"] else None
    status, raw = await http.request("POST", f"/gradio_api/call/{name}", body)
    if status != 200:
        raise RuntimeError(f"{name}: HTTP {status} {raw[:200]!r}")
    event_id = json.loads(raw)["event_id"]
    result = error = None
    async for event, data in http.events(f"/gradio_api/call/{name}/{event_id}"):
        if event == "complete":
            result = json.loads(data)
        elif event == "error":
            error = data
    if error is not None:
        raise RuntimeError(f"{name}: {error}")
    return result[0] if result else None


async def login(port: int, user: str, mode: str) -> Http:
    """Log in and make the Gradio session (a page load's worth of work: scrypt is slow on
    purpose, a new session copies the config of every block), before the clock starts."""
    http = Http(port)
    await http.open()
    try:
        status, _ = await http.request("POST", "/login", urlencode(
            {"username": user, "password": PASSWORD}).encode(), "application/x-www-form-urlencoded")
        assert status == 200, f"login failed for {user}: {status}"
        for attempt in range(3):
            try:
                await call(http, "progress", [], mode)
                break
            except ConnectionError:   # 64 logins at once: the server dropped this keep-alive
                if attempt == 2:      # connection before reading the request; open a new one
                    raise
                http.close()
                await http.open()
    finally:
        http.close()   # idle connections are closed by the server after 5 s: reopen at the start
    return http


async def annotator(http: Http, user: str, until: float, lat: dict, stats: dict, rng, mode: str,
                    stop: asyncio.Event | None = None, think: float = 0.0):
    """next_task → submit_label in a loop; ``think`` > 0: a pause after each label, drawn
    from an exponential distribution with that mean in seconds (a person reading the task)."""
    await http.open()
    try:
        while time.perf_counter() < until and not (stop and stop.is_set()):
            t0 = time.perf_counter()
            task = await call(http, "next_task", [], mode)
            lat["next_task"].append(time.perf_counter() - t0)
            if task is None:
                stats["empty"] += 1
                break
            ids = [r["id"] for r in task["responses"]]
            rng.shuffle(ids)
            ranking = [ids] if rng.random() < 0.1 else [[ids[0]], [ids[1]]]
            t0 = time.perf_counter()
            try:
                await call(http, "submit_label", [task["id"], json.dumps(ranking),
                                                  rng.choice(MARGINS), ""], mode)
            except RuntimeError as err:
                stats["errors"].append(str(err))
                continue
            lat["submit_label"].append(time.perf_counter() - t0)
            stats["ok"][user] = stats["ok"].get(user, 0) + 1
            if think > 0:   # ends early when the run stops
                pause = min(rng.expovariate(1 / think), max(until - time.perf_counter(), 0))
                if stop is None:
                    await asyncio.sleep(pause)
                else:
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=pause)
                    except asyncio.TimeoutError:
                        pass
    finally:
        http.close()


async def http_run(port: int, pid: int, clients: int, seconds: float, mode: str) -> dict:
    lat = {"next_task": [], "submit_label": []}
    stats = {"ok": {}, "errors": [], "empty": 0}
    sessions = await asyncio.gather(*[login(port, f"bench{c}", mode) for c in range(clients)])
    server0, client0, start = cpu_seconds(pid), time.process_time(), time.perf_counter()
    until = start + seconds
    await asyncio.gather(*[annotator(http, f"bench{c}", until, lat, stats, random.Random(c), mode)
                           for c, http in enumerate(sessions)])
    elapsed = time.perf_counter() - start
    return {"latencies": lat, "stats": stats, "elapsed": elapsed,
            "server_cpu": (cpu_seconds(pid) - server0) / elapsed,
            "client_cpu": (time.process_time() - client0) / elapsed}


def in_process_run(workspace: Path, db_path: Path, clients: int, seconds: float) -> dict:
    """The same loop without HTTP: N threads on the studio's service object."""
    from annotate.ui.service import Studio
    lat = {"next_task": [], "submit_label": []}
    ok = {}
    with store.Store(db_path) as db:
        studio = Studio(db, workspace)
        until = time.perf_counter() + seconds

        def worker(c):
            rng, user = random.Random(c), f"bench{c}"
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                task = studio.next_task(user)
                lat["next_task"].append(time.perf_counter() - t0)
                if task is None:
                    return
                ids = [r["id"] for r in task["responses"]]
                rng.shuffle(ids)
                t0 = time.perf_counter()
                studio.submit_label(user, task["id"], json.dumps([[ids[0]], [ids[1]]]),
                                    rng.choice(MARGINS), "")
                lat["submit_label"].append(time.perf_counter() - t0)
                ok[user] = ok.get(user, 0) + 1

        cpu0, start = time.process_time(), time.perf_counter()
        threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        elapsed = time.perf_counter() - start
        cpu = (time.process_time() - cpu0) / elapsed
        check = verify(db, ok)
    return {"latencies": lat, "stats": {"ok": ok, "errors": [], "empty": 0}, "elapsed": elapsed,
            "check": check, "server_cpu": cpu, "client_cpu": 0.0}


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


def summary(name: str, clients: int, run: dict, order: str = "default") -> dict:
    sub, nxt = run["latencies"]["submit_label"], run["latencies"]["next_task"]
    return {"mode": name, "order": order, "clients": clients, "labels": len(sub),
            "labels_per_s": len(sub) / run["elapsed"], "p50_ms": pct(sub, 0.50),
            "p95_ms": pct(sub, 0.95), "p99_ms": pct(sub, 0.99),
            "mean_ms": statistics.fmean(sub) * 1000 if sub else float("nan"),
            "next_p50_ms": pct(nxt, 0.50), "next_p95_ms": pct(nxt, 0.95),
            "server_cpu": run["server_cpu"], "client_cpu": run["client_cpu"],
            "errors": len(run["stats"]["errors"]), **run["check"]}


def compare_orders(results: list[dict], base: str) -> None:
    """next_task p95 per order (median over the repeats) against the first order's."""
    groups: dict[tuple, list[float]] = {}
    for r in results:
        if r["mode"] != "in-process":
            groups.setdefault((r["clients"], r["mode"], r["order"]), []).append(r["next_p95_ms"])
    for (clients, mode, order), p95s in sorted(groups.items()):
        ref = statistics.median(groups[(clients, mode, base)])
        mid = statistics.median(p95s)
        print(f"{clients:3d} clients  {mode:10s} {order:11s} next_task p95 median {mid:6.1f} ms "
              f"(runs: {', '.join(f'{v:.1f}' for v in p95s)})  {mid / ref:.2f}x {base}", flush=True)


def compare_roots(results: list[dict], roots: list[Path]) -> None:
    """Per clients and mode: each checkout's submit p95, next_task p95 and labels/s over the
    rounds (median [min-max]), then the paired ratio of the last checkout to the first."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if "root" in r:
            groups.setdefault((r["clients"], r["mode"], r["order"], r["root"]), []).append(r)
    for (clients, mode, order, root), runs in sorted(groups.items()):
        print(f"{clients:3d} clients  {mode:10s} {order:8s} {root}: submit p95 "
              f"{show([r['p95_ms'] for r in runs], ' ms')}, next_task p95 "
              f"{show([r['next_p95_ms'] for r in runs], ' ms')}, labels/s "
              f"{show([r['labels_per_s'] for r in runs])}, lost {sum(r['lost'] for r in runs)}",
              flush=True)
    if len(roots) < 2:
        return
    new, old = str(roots[-1]), str(roots[0])
    for (clients, mode, order, root), runs in sorted(groups.items()):
        if root != new:
            continue
        base = groups[(clients, mode, order, old)]
        print(f"{clients:3d} clients  {mode:10s} " + paired_ratio_line(Path(new).name, Path(old).name, {
            "submit p95": ([r["p95_ms"] for r in runs], [r["p95_ms"] for r in base]),
            "labels/s": ([r["labels_per_s"] for r in runs], [r["labels_per_s"] for r in base])}),
            flush=True)


def report(r: dict) -> None:
    print(f"{r['clients']:3d} clients  {r['mode']:10s} {r['order']:11s} {Path(r.get('root', '')).name:12s} "
          f"{r['labels_per_s']:6.1f} labels/s  "
          f"submit_label p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
          f"next_task p50 {r['next_p50_ms']:6.1f} ms  p95 {r['next_p95_ms']:6.1f} ms  "
          f"cpu server {r['server_cpu']:.2f} client {r['client_cpu']:.2f}  "
          f"submitted {r['submitted']}  in db {r['in_db']}  lost {r['lost']}  extra {r['extra']}  "
          f"max labels/task {r['max_labels_per_task']}  errors {r['errors']}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--modes", nargs="+", default=["rest", "run", "call"], choices=["rest", "run", "call"],
                   help="HTTP styles: rest = POST /api/<name> (plain JSON), run = one POST to "
                        "Gradio's endpoint, call = Gradio's queue + event stream")
    p.add_argument("--no-floor", action="store_true", help="skip the in-process floor")
    p.add_argument("--orders", nargs="+", default=["default"], choices=store.priorities.ORDERS,
                   help="queue orders to compare (an active order: every task ranked first)")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every (clients, order, mode) this many times, interleaved (A B A B)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--roots", type=Path, nargs="+", default=[ROOT],
                   help="checkouts whose server to run, interleaved (A B A B) in every round: "
                        "e.g. a `git archive` of the commit before a change, and this one")
    p.add_argument("--profile", type=Path, help="profile the server's threads with pyinstrument "
                   "(pip install pyinstrument): DIR/<clients>-<mode>-<run>/<thread>.txt")
    args = p.parse_args()
    print(load_line(), flush=True)
    results = []
    for clients, rep, order, mode, root in (
            (c, r, o, m, x) for c in args.clients for r in range(args.repeats)
            for o in args.orders for m in args.modes for x in args.roots):
        with tempfile.TemporaryDirectory(prefix="bench-annotate-") as tmp:
            workspace = Path(tmp)
            db_path = workspace / "prefstudio.duckdb"
            seed(db_path, args.tasks, clients, order)
            proc, port = start_server(workspace, db_path, args.profile and
                                      args.profile / f"{clients}-{mode}-{order}-{rep}", root)
            try:
                run = asyncio.run(http_run(port, proc.pid, clients, args.seconds, mode))
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            with store.Store(db_path) as db:
                run["check"] = verify(db, run["stats"]["ok"])
            if run["stats"]["errors"]:
                print(f"  first error: {run['stats']['errors'][0]}", file=sys.stderr)
            results.append({**summary(f"http-{mode}", clients, run, order), "root": str(root)})
            report(results[-1])
        if args.no_floor or root != args.roots[-1] or (order, mode) != (args.orders[-1], args.modes[-1]):
            continue
        with tempfile.TemporaryDirectory(prefix="bench-annotate-") as tmp:
            db_path = Path(tmp) / "prefstudio.duckdb"
            seed(db_path, args.tasks, clients)
            results.append(summary("in-process", clients,
                                   in_process_run(Path(tmp), db_path, clients, args.seconds)))
            report(results[-1])
        floor = results[-1]
        for r in results[-1 - len(args.modes):-1]:
            print(f"{clients:3d} clients  {r['mode']}/in-process throughput: "
                  f"{r['labels_per_s'] / floor['labels_per_s']:.2f}", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    if len(args.orders) > 1:
        compare_orders(results, args.orders[0])
    if len(args.roots) > 1 or args.repeats > 1:
        compare_roots(results, args.roots)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    bad = [r for r in results if r["lost"] or r["extra"] or r["max_labels_per_task"] > 1]
    if bad:
        print(f"LABELS LOST OR DUPLICATED: {bad}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
