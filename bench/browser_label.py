"""The browser's own round trip for one label, in real Chromium: click Submit → the next task
on screen, while the other annotators label flat out over HTTP.

Each round is a fresh workspace (--tasks pairwise tasks, --clients annotator accounts) and a
fresh `prefstudio serve` process. --pages of the accounts log in through the studio's login
page in headless Chromium (Playwright, /usr/bin/chromium; one browser context each) and label
--labels tasks each: pick "A is better" and a margin, then Submit. The other accounts are the
HTTP clients of bench/annotate.py (--mode rest | run | call), looping next_task → submit_label
without pause (or pausing --think-time seconds on average after each label, as people do)
until the pages are done.

The round trip is timed inside the page: ``performance.now()`` just before the Submit button's
click, then a MutationObserver on the task header waits for a new task id, and one
``requestAnimationFrame`` more for the frame that paints it. So it holds everything a person
waits for (Gradio's queue join, the handler: the label's COMMIT and the next task, the
event stream, Svelte's update of ~40 components) and nothing of Playwright's own round trips.

After each round the server is stopped and the database checked: the labels stored equal the
submits acknowledged (by the browser: the next task appeared; by HTTP: a result came back).

    python bench/browser_label.py --clients 32 --pages 1 --labels 40 --repeats 3 \\
        [--roots /tmp/base .]   # A B A B: another checkout's server against this one's
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotate import store  # noqa: E402
from bench.annotate import (PASSWORD, annotator, cpu_seconds, login, pct, seed,  # noqa: E402
                            start_server, verify)
from bench.sides import load_line, paired_ratio_line, show  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# where the time goes, from inside the page: when the queue join was answered, and when the
# event stream brought process_starts and process_completed (Gradio's client reads the stream
# with fetch and a stream reader; both are wrapped to timestamp, nothing else is changed)
PHASES_JS = """(() => {
  window.__phases = {};
  const fetch0 = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const response = await fetch0(input, init);
    const url = typeof input === 'string' ? input : String((input && input.url) || input);
    if (url.includes('/queue/join')) window.__phases.joined = performance.now();
    return response;
  };
  const read0 = ReadableStreamDefaultReader.prototype.read;
  const decoder = new TextDecoder();
  ReadableStreamDefaultReader.prototype.read = async function () {
    const chunk = await read0.call(this);
    if (chunk.value !== undefined) {
      const text = typeof chunk.value === 'string' ? chunk.value
        : chunk.value instanceof Uint8Array ? decoder.decode(chunk.value, {stream: true}) : '';
      for (const msg of ['process_starts', 'process_completed'])
        if (text.includes(msg) && !(msg in window.__phases)) window.__phases[msg] = performance.now();
    }
    return chunk;
  };
})();"""
ROUND_TRIP_JS = """async (previous) => {
  const info = document.querySelector('#ps-task-info');
  const taskOnScreen = () => { const m = /Task (\\S+) ·/.exec(info.innerText); return m && m[1]; };
  window.__phases = {};
  const t0 = performance.now();
  document.querySelector('#ps-submit').click();
  await new Promise((resolve, reject) => {
    const observer = new MutationObserver(() => {
      const now = taskOnScreen();
      if (now && now !== previous) { observer.disconnect(); resolve(); }
    });
    observer.observe(info, {subtree: true, childList: true, characterData: true});
    setTimeout(() => { observer.disconnect();
                       reject(new Error('no next task within 30 s: ' + info.innerText)); }, 30000);
  });
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const t1 = performance.now(), at = (name) => (window.__phases[name] ?? NaN) - t0;
  return [t1 - t0, taskOnScreen(), [at('joined'), at('process_starts'), at('process_completed')]];
}"""


async def page_task_id(page) -> str:
    info = page.locator("#ps-task-info")
    await info.filter(has_text="Task ").wait_for(timeout=60_000)
    text = await info.inner_text()
    return text.split("Task ", 1)[1].split(" ")[0]


PHASES = ["joined", "process_starts", "process_completed"]


async def browser_annotator(browser, url: str, user: str, labels: int, times: list, ok: dict,
                            phase_times: dict):
    context = await browser.new_context(viewport={"width": 1300, "height": 1000}, locale="en-US")
    page = await context.new_page()
    await page.add_init_script(PHASES_JS)
    try:
        await page.goto(url)
        await page.locator("input[type=password]").wait_for(timeout=60_000)
        await page.locator("input").first.fill(user)
        await page.locator("input[type=password]").fill(PASSWORD)
        await page.get_by_role("button").first.click()
        task = await page_task_id(page)
        for _ in range(labels):
            await page.locator("#ps-choice label").filter(has_text="A is better").first.click()
            await page.locator("#ps-margin label").filter(has_text="Better").first.click()
            took, task, phases = await page.evaluate(ROUND_TRIP_JS, task)
            times.append(took / 1000)
            for name, ms in zip(PHASES, phases):
                phase_times[name].append((ms or float("nan")) / 1000)
            ok[user] = ok.get(user, 0) + 1
    finally:
        await context.close()


async def one_round(port: int, pid: int, clients: int, pages: int, labels: int, mode: str,
                    think: float = 0.0) -> dict:
    from playwright.async_api import async_playwright
    url = f"http://127.0.0.1:{port}/"
    lat = {"next_task": [], "submit_label": []}
    stats = {"ok": {}, "errors": [], "empty": 0}
    users = [f"bench{c}" for c in range(clients)]
    sessions = await asyncio.gather(*[login(port, u, mode) for u in users[pages:]])
    browser_times: list[float] = []
    browser_ok: dict[str, int] = {}
    phases = {name: [] for name in PHASES}
    stop = asyncio.Event()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        server0, start = cpu_seconds(pid), time.perf_counter()
        background = [asyncio.create_task(annotator(http, u, float("inf"), lat, stats,
                                                    random.Random(i), mode, stop, think))
                      for i, (http, u) in enumerate(zip(sessions, users[pages:]))]
        try:
            await asyncio.gather(*[browser_annotator(browser, url, u, labels, browser_times,
                                                     browser_ok, phases) for u in users[:pages]])
        finally:
            stop.set()
            await asyncio.gather(*background)
            await browser.close()
        elapsed = time.perf_counter() - start
    return {"browser": browser_times, "browser_ok": browser_ok, "phases": phases, "latencies": lat, "stats": stats,
            "elapsed": elapsed, "server_cpu": (cpu_seconds(pid) - server0) / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32, help="annotators in all (pages included)")
    ap.add_argument("--pages", type=int, default=1, help="of them, in Chromium")
    ap.add_argument("--labels", type=int, default=40, help="labels per page")
    ap.add_argument("--mode", default="rest", choices=["rest", "run", "call"],
                    help="the HTTP annotators' route (bench/annotate.py)")
    ap.add_argument("--think-time", type=float, default=0.0,
                    help="the HTTP annotators' mean pause after each label, in seconds (0: flat "
                         "out, a stress load; people comparing two replies take several seconds)")
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--roots", type=Path, nargs="+", default=[ROOT],
                    help="checkouts whose server to run, interleaved A B A B in every round")
    ap.add_argument("--json", help="also write the rounds to this file")
    ap.add_argument("--profile", type=Path, help="profile the server's threads (bench/annotate.py "
                    "--profile): DIR/<round>-<checkout>/<thread>.txt")
    args = ap.parse_args()
    print(load_line(), flush=True)
    rounds = []
    for rep in range(args.repeats):
        for root in args.roots:
            with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
                db_path = Path(tmp) / "prefstudio.duckdb"
                seed(db_path, args.tasks, args.clients)
                proc, port = start_server(Path(tmp), db_path, args.profile and
                                          args.profile / f"{rep}-{root.name}", root)
                try:
                    r = asyncio.run(one_round(port, proc.pid, args.clients, args.pages,
                                              args.labels, args.mode, args.think_time))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
                with store.Store(db_path) as db:
                    check = verify(db, {**r["stats"]["ok"], **r["browser_ok"]})
            b, sub = r["browser"], r["latencies"]["submit_label"]
            rounds.append({"root": str(root), "round": rep, "browser_p50_ms": pct(b, 0.5),
                           "browser_p95_ms": pct(b, 0.95), "browser_labels": len(b),
                           "http_submit_p95_ms": pct(sub, 0.95), "http_labels_per_s": len(sub) / r["elapsed"],
                           "server_cpu": r["server_cpu"], "errors": len(r["stats"]["errors"]), **check,
                           **{f"{name}_p50_ms": pct(v, 0.5) for name, v in r["phases"].items()}})
            x = rounds[-1]
            print(f"round {rep} {root.name:12s} browser click→next task p50 {x['browser_p50_ms']:6.1f} ms "
                  f"p95 {x['browser_p95_ms']:6.1f} ms ({x['browser_labels']} labels, {args.pages} page(s)); "
                  f"{args.clients - args.pages} HTTP ({args.mode}) submit p95 {x['http_submit_p95_ms']:6.1f} ms, "
                  f"{x['http_labels_per_s']:.0f} labels/s; server cpu {x['server_cpu']:.2f}; "
                  f"submitted {x['submitted']} in db {x['in_db']} lost {x['lost']} extra {x['extra']}\n"
                  f"    after the click (p50): join answered {x['joined_p50_ms']:.1f} ms, process_starts "
                  f"{x['process_starts_p50_ms']:.1f} ms, process_completed {x['process_completed_p50_ms']:.1f} ms, "
                  f"next task painted {x['browser_p50_ms']:.1f} ms", flush=True)
    for root in args.roots:
        mine = [x for x in rounds if x["root"] == str(root)]
        print(f"{root}: browser p95 {show([x['browser_p95_ms'] for x in mine], ' ms')}, "
              f"p50 {show([x['browser_p50_ms'] for x in mine], ' ms')}, HTTP submit p95 "
              f"{show([x['http_submit_p95_ms'] for x in mine], ' ms')}, lost {sum(x['lost'] for x in mine)}")
    if len(args.roots) > 1:
        new, old = ([x for x in rounds if x["root"] == str(r)] for r in (args.roots[-1], args.roots[0]))
        print(paired_ratio_line(args.roots[-1].name, args.roots[0].name, {
            "browser p95": ([x["browser_p95_ms"] for x in new], [x["browser_p95_ms"] for x in old]),
            "browser p50": ([x["browser_p50_ms"] for x in new], [x["browser_p50_ms"] for x in old])}))
    if args.json:
        Path(args.json).write_text(json.dumps(rounds, indent=2))
    if any(x["lost"] or x["extra"] for x in rounds):
        print("LABELS LOST OR DUPLICATED", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
