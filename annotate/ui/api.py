"""The scriptable API: stable named endpoints for programs and tests (``gradio_client``).

    from gradio_client import Client
    client = Client("http://127.0.0.1:7860/", auth=("ann", "password"))
    task = client.predict(api_name="/next_task")          # None when the queue is empty
    best_first = [[task["responses"][1]["id"]], [task["responses"][0]["id"]]]
    client.predict(task["id"], json.dumps(best_first), "better", "", api_name="/submit_label")

Annotators: next_task, submit_label, skip_task, undo_label, my_labels, progress.
Admins: users; jobs: start_job, runs, stop_job, resume_job, new_round; the queue's order:
set_queue_order, queue_order; and the admin views'
named events import_file, export_pairs, browse, agreement, set_overlap. Every endpoint checks the caller's role itself (``Studio``);
``ENDPOINTS`` lists them all with the role each needs.
"""
# (No `from __future__ import annotations`: Gradio reads every handler's type hints on every
# call, and hints that are strings cost ~10x more to read than real ones.)
import asyncio

import gradio as gr

from .common import claim_next_view, shows_errors, username
from .service import Studio


def add_endpoints(studio: Studio) -> dict:
    """Register the endpoints inside the current ``gr.Blocks``; returns them by name (for the
    plain JSON routes of ``rest.py``)."""

    # The two calls of every label run on the server's event loop (async): the queue answers
    # from memory, and the wait for the group commit is awaited, not a blocked worker thread.
    @shows_errors
    async def next_task(request: gr.Request) -> dict | None:
        """Claim the next task: {id, kind, round, prompt (chat messages), responses [{id, text}]
        in the order shown to you, margin_levels}; None when nothing is left for you."""
        return await claim_next_view(studio, username(request))

    @shows_errors
    async def submit_label(task_id: str, ranking: str, margin: str = "", rationale: str = "",
                           request: gr.Request = None) -> dict:
        """Label a task you were handed. ranking: JSON list of tie groups of response ids, best
        first, e.g. '[["r2"], ["r1"]]'; margin (pairwise): significantly | better | slightly |
        negligibly. Submitting again for the same task edits your label (the old one is kept,
        superseded)."""
        committed = studio.submit_label_later(username(request), task_id, ranking, margin or None,
                                              rationale)
        return await asyncio.wrap_future(committed)

    @shows_errors
    def skip_task(task_id: str, request: gr.Request = None) -> dict:
        """Give a task back; it comes back to you after every task you have not skipped."""
        return studio.skip_task(username(request), task_id)

    @shows_errors
    def undo_label(label_id: str = "", request: gr.Request = None) -> dict:
        """Withdraw one of your labels (default: your newest); the task returns to the queue."""
        return studio.undo_label(username(request), label_id or None)

    @shows_errors
    def my_labels(limit: int = 20, request: gr.Request = None) -> list[dict]:
        """Your current labels, newest first."""
        rows = studio.my_labels(username(request), limit)
        return [{**r, "created_at": str(r["created_at"])} for r in rows]

    @shows_errors
    def progress(request: gr.Request) -> dict:
        """{done_today, done_total, left} for you."""
        return studio.progress(username(request))

    @shows_errors
    def users(action: str = "list", name: str = "", role: str = "", password: str = "",
              request: gr.Request = None) -> list[dict]:
        """Admins: action list | add | set_role | set_password; returns the users afterwards."""
        rows = studio.users(username(request), action, name, role, password)
        return [{k: (str(v) if k in ("created_at", "last_label") and v is not None else v)
                 for k, v in r.items()} for r in rows]

    # -- jobs (admins): the Jobs page calls the same service methods ----------------------
    @shows_errors
    def start_job(kind: str, params: dict = None, request: gr.Request = None) -> dict:
        """Admins: queue a job → {run_id}. kind: rm | sft | dpo | rs | ppo | rloo | rrhf | cai |
        rest | generate | judge | eval_rm | eval_policy; params keyed by the CLI option names with _ (e.g.
        {"base": "minilm", "max_steps": 2}), plus prompts (a prompt set: all, round:N,
        source:NAME, held_out) and options (extra flags)."""
        return studio.start_job(username(request), kind, params or {})

    @shows_errors
    def runs(request: gr.Request = None) -> list[dict]:
        """Admins: every run, newest first: {run_id, kind, status, step, max_steps, metrics,
        parents, round, command, error, started}."""
        return studio.runs(username(request))

    @shows_errors
    def stop_job(run_id: str, request: gr.Request = None) -> dict:
        """Admins: stop a queued or running job → {stopped}."""
        return studio.stop_job(username(request), run_id)

    @shows_errors
    def resume_job(run_id: str, request: gr.Request = None) -> dict:
        """Admins: queue a failed or stopped job again → {resumed, from_checkpoint}."""
        return studio.resume_job(username(request), run_id)

    @shows_errors
    def new_round(policy: str, k: int, round: int, prompts: str = "all", judge: str = "",
                  request: gr.Request = None) -> dict:
        """Admins: queue generation of K candidates per prompt from a policy (a run id or a
        model) into round-N tasks, then, if a judge is given (e.g. rm:<run id>), a judge job
        over them → {run_id, judge_run_id}."""
        return studio.new_round(username(request), policy, k, round, prompts, judge or None)

    @shows_errors
    def set_queue_order(order: str, rm: str = "", round: int = None,
                        request: gr.Request = None) -> dict:
        """Admins: the order the queue serves a round's tasks in (round omitted: every round):
        default (hashed, as before) | uncertainty | disagreement | mix (these three need rm, a
        reward-model run id) | diverse. Tasks not ranked by this reward model yet get a
        queue-order job → {order, rm, round, scoring_run}."""
        return studio.set_queue_order(username(request), order, rm or None, round)

    @shows_errors
    def queue_order(request: gr.Request = None) -> dict:
        """Admins: the chosen order per round ("*": every round) and what each ranked order
        is based on: {chosen, ranked: [{order, rm, tasks, rounds, run_id, scored_at}]}."""
        return studio.queue_order(username(request))

    handlers = {fn.__name__: fn for fn in (next_task, submit_label, skip_task, undo_label,
                                           my_labels, progress, users, start_job, runs,
                                           stop_job, resume_job, new_round, set_queue_order,
                                           queue_order)}
    for name, fn in handlers.items():
        gr.api(fn, api_name=name, concurrency_limit=None)
    return handlers


# Every event of the app by api_name, with who may call it. The security tests call each one
# over raw HTTP as an annotator and as a stranger, and fail on any event missing here.
ENDPOINTS: dict[str, str] = {
    # scriptable API
    "next_task": "annotator", "submit_label": "annotator", "skip_task": "annotator",
    "undo_label": "annotator", "my_labels": "annotator", "progress": "annotator",
    "users": "admin", "import_file": "admin", "export_pairs": "admin", "browse": "admin",
    "agreement": "admin", "set_overlap": "admin", "start_job": "admin", "stop_job": "admin",
    "resume_job": "admin", "runs": "admin", "new_round": "admin",
    "set_queue_order": "admin", "queue_order": "admin", "ui_queue_order_set": "admin",
    "ui_queue_order_view": "admin",
    # the Models & rounds tab and Browse's held-out controls (models.py)
    "models": "admin", "rounds": "admin", "mark_held_out": "admin", "compare_policies": "admin",
    "download_adapter": "admin", "use_as_judge": "admin", "next_round_from_policy": "admin",
    "ui_models_refresh": "admin", "ui_models_labels": "admin", "ui_pick_prompt": "admin",
    # the page's own events (hidden from the API docs, still HTTP endpoints)
    "ui_load_task": "annotator", "ui_submit": "annotator", "ui_skip": "annotator",
    "ui_undo": "annotator", "ui_cancel_edit": "annotator", "ui_my_labels": "annotator",
    "ui_my_labels_on_tab": "annotator", "ui_edit": "annotator", "ui_whoami": "annotator",
    "ui_add_user": "admin", "ui_set_role": "admin", "ui_set_password": "admin", "ui_run_detail": "admin",
    "ui_start_annotating": "annotator",   # an admin's Start annotating button
    "ui_users_tab": "admin",              # the Users tab opens: user table and current overlap
    "ui_agreement_note": "admin",         # why the per-task agreement table is empty
    "ui_jobs_tick": "admin", "ui_start_job": "admin", "ui_stop_job": "admin",
    "ui_resume_job": "admin", "ui_job_form": "admin",
    "ui_job_form_load": "annotator",   # every page load: fills the form for admins, nothing else
    # run only in the browser (no Python function behind them)
    "ui_restore_language": "browser", "ui_language": "browser",

}
