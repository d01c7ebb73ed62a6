"""What the Models page does, each action checking the caller is an admin first: list models
and rounds, mark prompts held out, compare two policies' answers, zip an adapter, and hand a
model on (a reward model as judge, a policy to the next round) through the job queue when it
has that job kind, else as the exact command to run."""
from __future__ import annotations

import json
import re
import uuid
import zipfile
from pathlib import Path

from .. import store
from ..store import StoreError
from ..store import models as model_queries

ADAPTER_FILES = ("adapter", "policy.json", "rm.json", "head.pt")   # what loading a run needs
MAX_COMPARED = 200


class ModelOps:
    def __init__(self, studio):
        self.studio = studio
        self.db = studio.db

    def _admin(self, user: str | None) -> str:
        return self.studio.require(user, admin=True)

    def _model_run(self, run_id: str, roles: tuple[str, ...]) -> dict:
        models = {m["run_id"]: m for m in model_queries.model_runs(self.db)}
        if not isinstance(run_id, str) or run_id not in models:
            raise StoreError(f"no reward model or policy run {run_id!r}")
        model = models[run_id]
        if model["kind"] not in roles:
            raise StoreError(f"run {run_id!r} is a {model['kind']} run, not one of {', '.join(roles)}")
        return model

    def _inside_workspace(self, folder: str | None, what: str) -> Path:
        """A run's folder, refused unless it is inside the workspace (files never leave it)."""
        path = Path(folder or "").resolve()
        if not folder or not path.is_relative_to(self.studio.workspace):
            raise StoreError(f"{what}: its folder is not inside the workspace")
        return path

    # -- views -------------------------------------------------------------------------------
    def models(self, user: str | None) -> list[dict]:
        self._admin(user)
        return [{**m, "started_at": str(m["started_at"]) if m["started_at"] else None}
                for m in model_queries.model_runs(self.db)]

    def rounds(self, user: str | None) -> list[dict]:
        self._admin(user)
        return model_queries.rounds_summary(self.db)

    def lineage(self, user: str | None) -> dict:
        self._admin(user)
        return model_queries.lineage_graph(self.db)

    def trained_labels(self, user: str | None, run_id: str) -> list[dict]:
        self._admin(user)
        self._model_run(run_id, model_queries.RM_KINDS + model_queries.POLICY_KINDS)
        return store.browse(self.db, "labels", run=run_id, limit=500)

    # -- held-out prompts --------------------------------------------------------------------
    def mark_held_out(self, user: str | None, prompt_ids, held_out: bool = True) -> dict:
        self._admin(user)
        if isinstance(prompt_ids, str):
            prompt_ids = [p for p in re.split(r"[\s,]+", prompt_ids) if p]
        if not isinstance(prompt_ids, list) or not prompt_ids \
                or not all(isinstance(p, str) for p in prompt_ids):
            raise StoreError("prompt_ids: give one or more prompt ids")
        changed = store.mark_held_out(self.db, prompt_ids, bool(held_out))
        return {"changed": changed, "held_out": len(store.held_out_ids(self.db))}

    def prompt_of(self, user: str | None, row_id) -> str | None:
        """The prompt id of a Browse row's id (a prompt's, or a task's prompt), else None."""
        self._admin(user)
        if not isinstance(row_id, str) or not row_id:
            return None
        return store.prompt_of_row(self.db, row_id)

    # -- comparing two policies --------------------------------------------------------------
    def _answers(self, run_id: str) -> dict[str, dict]:
        ev = model_queries.eval_run_of(self.db, run_id)
        if ev is None:
            raise StoreError(f"policy {run_id!r} has no finished eval_policy run: evaluate it first")
        path = self._inside_workspace(ev["artifact_dir"], f"evaluation {ev['id']}") / "samples.jsonl"
        if not path.is_file():
            raise StoreError(f"evaluation {ev['id']!r} kept no answers (samples.jsonl)")
        out = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                out.setdefault(store.prompt_row(row["prompt"])["id"], row)
            except (ValueError, KeyError, TypeError, StoreError):
                continue   # a line being written, or not an answer: skipped
        return out

    def compare(self, user: str | None, a: str, b: str) -> list[dict]:
        """The two policies' answers (and rewards) to the prompts both were evaluated on."""
        self._admin(user)
        for run_id in (a, b):
            self._model_run(run_id, model_queries.POLICY_KINDS)
        left, right = self._answers(a), self._answers(b)
        shared = [pid for pid in left if pid in right][:MAX_COMPARED]
        if not shared:
            raise StoreError(f"{a} and {b} were evaluated on different prompts: evaluate both on "
                             "the same set (the held-out prompts)")
        rows = []
        for pid in shared:
            prompt = left[pid]["prompt"]
            rows.append({"prompt": prompt[-1]["content"], "answer_a": left[pid]["policy"],
                         "reward_a": left[pid].get("reward_policy"), "answer_b": right[pid]["policy"],
                         "reward_b": right[pid].get("reward_policy")})
        return rows

    # -- files -------------------------------------------------------------------------------
    def adapter_zip(self, user: str | None, run_id: str) -> Path:
        """A zip of the run's adapter (and the small files that say how to load it) under
        <workspace>/exports/<random>/; symlinks and anything outside the run are left out."""
        self._admin(user)
        model = self._model_run(run_id, model_queries.RM_KINDS + model_queries.POLICY_KINDS)
        folder = self._inside_workspace(model["artifact_dir"], f"run {run_id}")
        if not (folder / "adapter").is_dir() or (folder / "adapter").is_symlink():
            raise StoreError(f"run {run_id!r} has no adapter/ folder (still training, or a full model)")
        out_dir = self.studio.exports / uuid.uuid4().hex
        out_dir.mkdir(parents=True)
        out = out_dir / (re.sub(r"[^\w.-]", "_", run_id) + "-adapter.zip")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in ADAPTER_FILES:
                top = folder / name
                files = sorted(top.rglob("*")) if top.is_dir() else [top]
                for path in files:
                    if path.is_symlink() or not path.is_file():
                        continue
                    if not path.resolve().is_relative_to(folder):
                        continue
                    zf.write(path, path.relative_to(folder).as_posix())
        return out

    # -- handing a model on ------------------------------------------------------------------
    def use_as_judge(self, user: str | None, run_id: str) -> dict:
        """A reward model as the AI judge ``rm:<run>``: a judge job over the open tasks."""
        self._admin(user)
        self._model_run(run_id, model_queries.RM_KINDS)
        spec = f"rm:{run_id}"
        return {"judge": spec, "run_id": self.studio.jobs.start("judge", {"judge": spec})}

    def next_round(self, user: str | None, run_id: str, k: int = 4, prompts: str = "all") -> dict:
        """K candidates per prompt from the policy into the next round's tasks (``new_round``)."""
        self._admin(user)
        model = self._model_run(run_id, model_queries.POLICY_KINDS)
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise StoreError(f"k: a number of candidates, not {k!r}") from None
        if not 2 <= k <= 9:
            raise StoreError("k: 2 to 9 candidates per prompt (one task each)")
        if model["status"] != "done":
            raise StoreError(f"policy {run_id!r} is {model['status']}: only a finished policy "
                             "can start a round")
        rnd = model_queries.next_round(self.db)
        result = self.studio.new_round(user, run_id, k, rnd, prompts or "all")
        return {**result, "round": rnd}
