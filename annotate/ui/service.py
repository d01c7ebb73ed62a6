"""What the studio can do, with the caller's role checked in every call.

Gradio exposes every event handler as an HTTP endpoint, hidden or not, so the check cannot
live in the page: each method here takes the caller's user name (from ``gr.Request``, set by
Gradio's login) and looks the role up in the store on every call. A role changed or a user
removed by an admin takes effect on that user's next click. The views (``views.py``) and the
scriptable API (``api.py``) are thin layers over these methods.
"""
from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .. import agreement, store
from . import forms, runview
from ..store import StoreError


CACHED_TASKS = 4096   # task texts kept in memory (least recently shown dropped first)
PREFETCH = 31         # tasks fetched along with a missing one


class Refused(StoreError):
    """The caller may not do this (not logged in, unknown user, not an admin)."""


class Studio:
    def __init__(self, db: store.Store, workspace: str | Path, parse_command=None,
                 max_jobs: int = 1):
        from .jobs import JobRunner
        self.db = db
        self.workspace = Path(workspace).resolve()
        self.uploads = self.workspace / "uploads"
        self.exports = self.workspace / "exports"
        self.levels = store.margin_levels(db)
        self.jobs = JobRunner(db, self.workspace, parse_command=parse_command,
                              max_jobs=max_jobs)
        # tasks never change once made (content ids), so their text can be kept in memory
        self._tasks: OrderedDict[str, dict] = OrderedDict()
        self._tasks_lock = threading.Lock()

    # -- who is calling ----------------------------------------------------------------------
    def require(self, user: str | None, admin: bool = False) -> str:
        if not user:
            raise Refused("log in first")
        role = store.role_of(self.db, user)
        if role is None:
            raise Refused(f"unknown user {user!r}")
        if admin and role != "admin":
            raise Refused("only admins may do this")
        return user

    def role(self, user: str | None) -> str:
        self.require(user)
        return store.role_of(self.db, user)

    # -- annotators --------------------------------------------------------------------------
    def next_task(self, user: str | None) -> dict | None:
        """Claim the next task; its responses come in this annotator's shuffled order."""
        task_id = self.claim_next(user)
        return None if task_id is None else self.task_view(self.require(user), task_id)

    def claim_next(self, user: str | None) -> str | None:
        """Claim the next task and return its id (an in-memory step: no SQL)."""
        return store.next_task(self.db, self.require(user))

    def cached_task_view(self, user: str, task_id: str) -> dict | None:
        """``task_view`` if the task's text is in memory already, else None (no SQL)."""
        with self._tasks_lock:
            if task_id not in self._tasks:
                return None
        return self.task_view(user, task_id)

    def task_view(self, user: str, task_id: str) -> dict:
        """The task as an annotator sees it: no labels of anyone, responses in shown order."""
        task = self._task(task_id, user)
        order = store.shown_order(task_id, user, task["response_ids"])
        texts = {r["id"]: r["text"] for r in task["responses"]}
        return {"id": task_id, "kind": task["kind"], "round": task["round"],
                "prompt": task["messages"],
                "responses": [{"id": rid, "text": texts[rid]} for rid in order],
                "margin_levels": list(self.levels)}

    def _task(self, task_id: str, user: str) -> dict:
        """A task with its texts, from memory; a miss also fetches the next tasks the queue
        will likely hand this annotator (one query instead of one per click)."""
        with self._tasks_lock:
            task = self._tasks.get(task_id)
            if task is not None:
                self._tasks.move_to_end(task_id)
                return task
        ids = [task_id, *store.upcoming_tasks(self.db, user, PREFETCH)]
        fetched = store.get_full_tasks(self.db, ids)
        if task_id not in fetched:
            raise StoreError(f"unknown task id {task_id!r}")
        with self._tasks_lock:
            self._tasks.update(fetched)
            while len(self._tasks) > CACHED_TASKS:
                self._tasks.popitem(last=False)
        return fetched[task_id]

    def submit_label(self, user: str | None, task_id: str, ranking: Any, margin: str | None = None,
                     rationale: str | None = None, duration_ms: int | None = None) -> dict:
        return self.submit_label_later(user, task_id, ranking, margin, rationale,
                                       duration_ms).result()

    def submit_label_later(self, user: str | None, task_id: str, ranking: Any,
                           margin: str | None = None, rationale: str | None = None,
                           duration_ms: int | None = None) -> Future:
        """Check and record the label now (errors raise here); the future resolves to
        ``{label_id, task_id, superseded}`` once the label is committed (group commit)."""
        user = self.require(user)
        if isinstance(ranking, str):
            try:
                ranking = json.loads(ranking)
            except json.JSONDecodeError as err:
                raise StoreError(f"ranking is not valid JSON: {err.msg} at character {err.pos}") from None
        if not margin and isinstance(ranking, list) and len(ranking) == 2 \
                and self._task(task_id, user)["kind"] == "pairwise":
            # people say by how much (the UI asks too); a tie is one group and needs none
            raise StoreError("a pairwise label needs a margin: " + " | ".join(self.levels)
                             + " (or rank both responses together for a tie)")
        return store.submit_label_later(
            self.db, user, task_id, ranking, margin_level=margin or None,
            rationale=(rationale or "").strip() or None, duration_ms=duration_ms, levels=self.levels)

    def skip_task(self, user: str | None, task_id: str) -> dict:
        user = self.require(user)
        store.skip_task(self.db, user, task_id)
        return {"skipped": task_id}

    def undo_label(self, user: str | None, label_id: str | None = None) -> dict:
        """Retract one of my current labels (default: the newest); it stays in the table."""
        user = self.require(user)
        if not label_id:
            mine = store.my_labels(self.db, user, limit=1)
            if not mine:
                raise StoreError("you have no label to undo")
            label_id = mine[0]["label_id"]
        store.undo_label(self.db, user, label_id)
        return {"undone": label_id}

    def my_labels(self, user: str | None, limit: int = 20) -> list[dict]:
        user = self.require(user)
        return store.my_labels(self.db, user, limit=max(1, min(int(limit), 500)))

    def my_label(self, user: str | None, label_id: str) -> dict:
        """One of my own current labels (to edit it); another annotator's is 'unknown'."""
        user = self.require(user)
        for row in store.my_labels(self.db, user, limit=500):
            if row["label_id"] == label_id:
                return row
        raise StoreError(f"you have no current label {label_id!r}")

    def progress(self, user: str | None) -> dict:
        user = self.require(user)
        return store.queue_progress(self.db, user)

    # -- admins ------------------------------------------------------------------------------
    def import_file(self, user: str | None, path: str | Path, fmt: str = "auto", round: int = 0,
                    required_labels: int = 1) -> dict:
        """Copy an uploaded file into <workspace>/uploads and import it (all or nothing).

        Errors and the result name the file as uploaded, not the server's copy.
        """
        self.require(user, admin=True)
        from .. import formats
        src = Path(path)
        if not src.is_file():
            raise StoreError("no file was uploaded")
        name = _safe_name(src.name)
        dest = self.uploads / uuid.uuid4().hex[:12] / name
        dest.parent.mkdir(parents=True)
        shutil.copyfile(src, dest)
        try:
            result = formats.import_file(self.db, dest, fmt=fmt or "auto", round=int(round or 0),
                                         required_labels=int(required_labels or 1))
        except StoreError as err:
            raise type(err)(str(err).replace(str(dest), name)) from None
        return {**result, "file": name}

    def export_pairs(self, user: str | None, source: str = "both",
                     min_agreement: float | None = None) -> dict:
        """Write the TRL pairs file into <workspace>/exports under an unguessable name."""
        self.require(user, admin=True)
        self.require_labels(source or "both")
        from .. import formats
        folder = self.exports / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return formats.export(self.db, "pairs", folder / "pairs.jsonl", source=source or "both",
                              min_agreement=min_agreement)

    def browse(self, user: str | None, table: str, **filters) -> list[dict]:
        self.require(user, admin=True)
        return store.browse(self.db, table, **filters)

    def agreement(self, user: str | None, source: str = "human") -> dict:
        self.require(user, admin=True)
        return agreement.report(self.db, source=source or "human")

    def users(self, user: str | None, action: str = "list", name: str = "", role: str = "",
              password: str = "") -> list[dict]:
        """list | add | set_role | set_password; returns the user table afterwards."""
        self.require(user, admin=True)
        if action == "add":
            store.add_user(self.db, name, role, password)
        elif action == "set_role":
            store.set_role(self.db, name, role)
        elif action == "set_password":
            store.set_password(self.db, name, password)
        elif action != "list":
            raise StoreError(f"action must be list, add, set_role or set_password, not {action!r}")
        return store.user_stats(self.db)

    def require_labels(self, source: str) -> None:
        """Refuse, in words, to export or train from AI labels when there are none (instead of
        a failure deep in the export or trainer that names a file of the server)."""
        if source == "ai" and not store.current_label_count(self.db, "ai"):
            raise StoreError("there are no AI labels yet: run a judge first, or use source "
                             "human or both")

    def overlap(self, user: str | None) -> int:
        """The overlap most tasks have now (what the Users tab shows; 1 with no tasks)."""
        self.require(user, admin=True)
        return store.usual_overlap(self.db)

    def set_overlap(self, user: str | None, required: int, round: int | None = None) -> dict:
        self.require(user, admin=True)
        ids = None if round is None else store.task_ids(self.db, round)
        if ids == []:
            raise StoreError(f"no tasks in round {round}")
        changed = store.set_required_labels(self.db, int(required), ids)
        return {"tasks": changed, "required_labels": int(required)}

    def queue_order(self, user: str | None) -> dict:
        """The queue's order per round ("*": every round) and what each ranked order is based on."""
        self.require(user, admin=True)
        return {"chosen": store.priorities.queue_orders(self.db),
                "ranked": store.priorities.rankings(self.db)}

    def set_queue_order(self, user: str | None, order: str, rm: str | None = None,
                        round: int | None = None) -> dict:
        """Serve a round's tasks (or every round's) in ``order``; when the tasks have no ranks
        from this reward model yet, a queue-order job computes them (until it is done the
        queue keeps its hashed order) → {order, rm, round, scoring_run}."""
        self.require(user, admin=True)
        order, rm, _ = store.priorities.check_choice(self.db, order, rm or None, round)
        scoring = None
        if order != "default" and not store.priorities.fully_ranked(self.db, order, rm, round):
            params = {"order": order, "rm": rm, "round": round}
            scoring = self.start_job(user, "queue_order", {k: v for k, v in params.items()
                                                           if v is not None})["run_id"]
        chosen = store.priorities.set_queue_order(self.db, order, rm, round, by=user)
        return {**chosen, "scoring_run": scoring}

    # -- jobs (admins) ------------------------------------------------------------------------
    def start_job(self, user: str | None, kind: str, params: dict | None = None) -> dict:
        """Queue a job (params keyed by its CLI options, see forms.py) → {run_id}."""
        self.require(user, admin=True)
        if (params or {}).get("source") == "ai":
            self.require_labels("ai")
        return {"run_id": self.jobs.start(kind, params or {})}

    def stop_job(self, user: str | None, run_id: str) -> dict:
        self.require(user, admin=True)
        self.jobs.stop(run_id)
        return {"stopped": run_id}

    def resume_job(self, user: str | None, run_id: str) -> dict:
        """Queue a failed or stopped job again, from its last checkpoint when it saved one."""
        self.require(user, admin=True)
        return self.jobs.resume(run_id)

    def new_round(self, user: str | None, policy: str, k: int, round: int, prompts: str,
                  judge: str | None = None) -> dict:
        """Queue a generate job (K candidates per prompt from ``policy`` into round-N tasks)
        and, if a judge is named, a judge job over the open tasks after it → {run_id, judge_run_id}."""
        self.require(user, admin=True)
        run_id = self.jobs.start("generate", {"model": policy, "k": k, "round": round,
                                              "prompts": prompts})
        judged = self.jobs.start("judge", {"judge": judge}) if judge else None
        return {"run_id": run_id, "judge_run_id": judged}

    def runs(self, user: str | None) -> list[dict]:
        self.require(user, admin=True)
        return runview.overview(self.db, self.jobs.runs)

    def run_detail(self, user: str | None, run_id: str) -> dict:
        self.require(user, admin=True)
        return runview.detail(self.db, self.jobs.runs, run_id)

    def job_form(self, user: str | None, kind: str, preset: str = "fast") -> dict:
        """The form of a job kind: its fields (with the preset's values) and what the pickers
        offer (models and runs by name, prompt sets)."""
        self.require(user, admin=True)
        fields = forms.form(kind, self.jobs.parse_command.options)
        values = forms.preset(kind, preset)
        rows = store.list_runs(self.db)
        for f in fields:
            f["value"] = values.get(f["dest"], f["default"])
            if f["picker"]:
                f["choices"] = forms.model_choices(rows, f["picker"], self.workspace)
            elif f["dest"] == "prompts":
                f["choices"] = store.prompt_sets(self.db)
                # "better" is measured on prompts the policy never trained on, when there are any
                held_out = kind == "eval_policy" and "held_out" in f["choices"]
                f["value"] = "held_out" if held_out else f["choices"][0]
        return {"kind": kind, "preset": preset, "fields": fields}


def _safe_name(name: str) -> str:
    """A file name with nothing but letters, digits, dot, dash and underscore."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)
    return cleaned.lstrip(".")[:80] or "upload"
