"""Many annotators at once, and kill -9 in the middle of their writes: no acknowledged label
is lost or stored twice, and no task gets more labels than its overlap.

`prefstudio serve` runs as its own process on a real DuckDB file; the annotators are asyncio
HTTP clients (tests/reliability/studio_process.py). Every task has overlap 2, so "no slot
handed out twice" is tested where it is hardest (the second slot, while the first is taken).
The figures are printed (run with ``-s``) for RELIABILITY.md:

    python -m pytest tests/reliability/test_durability_load.py -s -q
"""
from __future__ import annotations

import signal

from studio_process import Outcome, Studio, annotate, seed, stored, wal_of

OVERLAP = 2


def report(what: str, out: Outcome, db: dict, **more) -> None:
    extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in more.items())
    print(f"\nRELIABILITY {what}: acknowledged {len(out.acked)}, stored {len(out.ids & db['ids'])}, "
          f"lost {len(out.ids - db['ids'])}, refused {len(out.errors)}, tasks over their overlap "
          f"{db['tasks_over_overlap']}{extra}", flush=True)


def run_clean(tmp_path, annotators: int, per_annotator: int, modes: list[str], what: str) -> None:
    """``annotators`` clients label ``per_annotator`` tasks each at once; then SIGTERM."""
    workspace = tmp_path / "ws"
    db_path = workspace / "prefstudio.duckdb"
    users = seed(db_path, tasks=annotators * per_annotator // OVERLAP + 200, annotators=annotators,
                 required=OVERLAP)
    studio = Studio(workspace, db_path)
    try:
        out = annotate(studio.port, users, modes, count=per_annotator)
        assert studio.stop(signal.SIGTERM) == 0
    finally:
        studio.ensure_dead()
    db = stored(db_path)
    report(what, out, db, stored_rows=db["rows"])
    assert (out.errors, out.cut_off, out.ran_dry) == ([], 0, 0)
    assert len(out.acked) == len(out.ids) == annotators * per_annotator
    assert db["ids"] == out.ids                 # every acknowledged label, and nothing else...
    assert db["rows"] == len(out.ids)           # ...each stored once
    assert db["tasks_over_overlap"] == 0 and db["annotator_twice_on_a_task"] == 0
    assert not wal_of(db_path).exists()


def test_64_annotators_x_50_labels_over_the_json_route(tmp_path):
    run_clean(tmp_path, 64, 50, ["rest"], "64 x 50 over POST /api/<name>")


def test_16_annotators_x_20_labels_over_gradios_routes(tmp_path):
    """Half through Gradio's queue and event stream (as gradio_client and the browser call),
    half through its one-request route."""
    run_clean(tmp_path, 16, 20, ["call", "run"], "16 x 20 over /gradio_api/call and /run")


ROUNDS = 3
PER_ROUND = 3300   # acknowledged labels before each kill -9: over 9,674 in all, as in issue 12


def test_kill_9_during_a_16_client_write_storm_three_rounds(tmp_path):
    workspace = tmp_path / "ws"
    db_path = workspace / "prefstudio.duckdb"
    users = seed(db_path, tasks=ROUNDS * PER_ROUND, annotators=16, required=OVERLAP)
    acked: set[str] = set()
    before: set[str] = set()                      # label ids in the file before this round
    for round_ in range(1, ROUNDS + 1):
        studio = Studio(workspace, db_path)       # the same file, recovered from the last kill
        try:
            out = annotate(studio.port, users, ["rest"], stop_pid=studio.proc.pid,
                           stop_after=PER_ROUND)
        finally:
            studio.ensure_dead()
        assert studio.proc.returncode == -signal.SIGKILL
        db = stored(db_path)
        acked |= out.ids
        report(f"kill -9 round {round_}", out, db, cut_off_clients=out.cut_off,
               stored_but_unacknowledged=len(db["ids"] - before - out.ids),
               all_rounds_lost=len(acked - db["ids"]))
        before = db["ids"]
        assert out.errors == [] and out.cut_off == len(users)   # every client was mid-storm
        assert len(out.acked) >= PER_ROUND
        assert acked <= db["ids"], f"{len(acked - db['ids'])} acknowledged labels lost"
        assert db["tasks_over_overlap"] == 0 and db["annotator_twice_on_a_task"] == 0
    print(f"\nRELIABILITY kill -9 total: acknowledged {len(acked)}, lost {len(acked - db['ids'])}",
          flush=True)
