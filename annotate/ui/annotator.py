"""The annotator's view: the chat, the responses in shuffled order, the choice, the queue.

Pairwise tasks show A and B side by side with A / tie / B and the Llama-2 margin scale;
K-way tasks (3–9 responses) give each response a rank, equal ranks being a tie group.
The task on screen lives in server-side session state (``gr.State``), so the browser never
supplies the task id or the order shown: the server knows what it showed.
"""
# (No `from __future__ import annotations`: Gradio reads every handler's type hints on every
# call, and hints that are strings cost ~10x more to read than real ones.)
import asyncio
import logging
import string
import time

import gradio as gr

from ..store import StoreError
from ..store.items import MAX_K
from . import render
from .common import claim_next_view, frame, keeps_view, notify, private, username
from .service import Studio

log = logging.getLogger(__name__)
LETTERS = string.ascii_uppercase[:MAX_K]
ROWS = COLS = 3  # nine card slots, three rows of three


def slots(k: int) -> list[int]:
    """Which of the nine card slots shows response i of k: 2 per row for k = 2 or 4, else 3."""
    per_row = 2 if k in (2, 4) else COLS
    return [(i // per_row) * COLS + i % per_row for i in range(k)]


def ranking_text(ranking, shown: list[str]) -> str:
    """[['r2'], ['r1', 'r3']] → 'B > A = C' in the letters this annotator saw."""
    letter = {rid: LETTERS[i] for i, rid in enumerate(shown)}
    return " > ".join(" = ".join(sorted(letter.get(r, "?") for r in g)) for g in ranking)


class AnnotatorView:
    def __init__(self, studio: Studio, t: gr.I18n):
        self.studio = studio
        self.t = t

    # -- layout ------------------------------------------------------------------------------
    def build(self, tabs: gr.Tabs) -> None:
        t = self.t
        self.tabs = tabs
        with gr.Tab(t("tab_annotate"), id="annotate"):
            self.state = gr.State(None)  # the task on screen, kept server-side per session
            self.progress = gr.HTML(elem_id="ps-progress", js_on_load=None)
            self.info = gr.HTML(elem_id="ps-task-info", js_on_load=None)
            self.chat = gr.HTML(elem_id="ps-chat", js_on_load=None)
            self.rows, self.cols, self.cards, self.ranks = [], [], [], []
            for r in range(ROWS):
                with gr.Row(equal_height=True, visible=False) as row:
                    self.rows.append(row)
                    for c in range(COLS):
                        i = r * COLS + c
                        with gr.Column(visible=False, elem_classes="ps-slot", min_width=220) as col:
                            self.cols.append(col)
                            self.cards.append(gr.HTML(elem_id=f"ps-card-{i}", js_on_load=None))
                            self.ranks.append(gr.Radio([str(n) for n in range(1, MAX_K + 1)],
                                                       label=t("rank"), elem_id=f"ps-rank-{i}",
                                                       elem_classes="ps-rank", visible=False))
            with gr.Group(visible=False) as self.pair_box:
                self.choice = gr.Radio([(t("a_better"), "A"), (t("tie"), "tie"), (t("b_better"), "B")],
                                       label=t("which_better"), elem_id="ps-choice")
                self.margin = gr.Radio([(t(f"m_{lvl}"), lvl) for lvl in self.studio.levels],
                                       label=t("margin"), elem_id="ps-margin")
            self.rationale = gr.Textbox(label=t("rationale"), lines=2, max_lines=8,
                                        elem_id="ps-rationale", visible=False)
            with gr.Row():
                self.submit = gr.Button(t("submit"), variant="primary", elem_id="ps-submit", visible=False)
                self.skip = gr.Button(t("skip"), elem_id="ps-skip", visible=False)
                self.undo = gr.Button(t("undo"), elem_id="ps-undo")
                self.cancel = gr.Button(t("cancel_edit"), elem_id="ps-cancel", visible=False)
                # admins get a task only when they ask: opening the studio claims nothing
                self.start = gr.Button(t("start_annotating"), variant="primary",
                                       elem_id="ps-start", visible=False)
            with gr.Accordion(t("shortcuts"), open=False):
                gr.Markdown(t("shortcuts_md"))
        with gr.Tab(t("tab_mine"), id="mine"):
            self.mine = gr.Dataframe(interactive=False, elem_id="ps-my-labels", wrap=True,
                                     elem_classes="ps-i18n-table")
            with gr.Row():
                self.pick = gr.Dropdown(label=t("label_id"), choices=[], elem_id="ps-pick")
                self.edit = gr.Button(t("edit"), elem_id="ps-edit")
                self.refresh = gr.Button(t("refresh"), elem_id="ps-refresh-mine")

    @property
    def task_outputs(self) -> list:
        return [self.state, self.progress, self.info, self.chat, self.pair_box, self.choice,
                self.margin, self.rationale, self.submit, self.skip, self.cancel,
                *self.rows, *self.cols, *self.cards, *self.ranks, self.start]

    def wire(self, demo: gr.Blocks) -> None:
        outs = self.task_outputs
        ranks = self.ranks
        # the "processing" overlay on the task header only: by default Gradio draws it over
        # each of the ~40 outputs when the click goes out and takes it off each when the
        # answer comes, which the browser paid for on every label (BENCHMARKS.md)
        spinner = {"show_progress_on": [self.info]}
        demo.load(self.on_open, outputs=outs, **private("load_task"))
        self.start.click(self.show_next, outputs=outs, **spinner, **private("start_annotating"))
        # a set of inputs arrives as one {component: value} dict (nine rank radios)
        self.submit.click(self.on_submit, {self.state, self.choice, self.margin, self.rationale, *ranks},
                          outputs=outs, **spinner, **private("submit"))
        self.skip.click(self.on_skip, [self.state], outputs=outs, **spinner, **private("skip"))
        self.undo.click(self.on_undo, outputs=outs, **spinner, **private("undo"))
        self.cancel.click(self.show_next, outputs=outs, **spinner, **private("cancel_edit"))
        mine_outs = [self.mine, self.pick]
        self.refresh.click(self.my_labels, outputs=mine_outs, **private("my_labels"))
        self.tabs.select(self.my_labels, outputs=mine_outs, **private("my_labels_on_tab"))
        self.edit.click(self.on_edit, [self.pick], outputs=[*outs, self.tabs], **private("edit"))

    # -- filling the view --------------------------------------------------------------------
    def task_updates(self, user: str, task: dict | None, *, prefill: dict | None = None,
                     edit_of: str | None = None) -> list:
        """Updates for ``task_outputs``: a task to label, or the 'all done' screen."""
        p = self.studio.progress(user)
        progress = render.progress_html(p["done_today"], p["done_total"], p["left"])
        if task is None:
            done = render.message_html("Nothing left in your queue. Thank you!",
                                       "您的队列已经完成，谢谢！", "done")
            return self._blank(progress, done, state=None)
        try:
            chat = render.chat_html(task["prompt"])
            texts = [render.response_html(LETTERS[i], r["text"])
                     for i, r in enumerate(task["responses"])]
        except Exception as err:  # noqa: BLE001 - one broken task must not take the view down
            log.exception("task %s cannot be shown", task.get("id"))
            broken = render.message_html(
                f"Task {task.get('id')} cannot be shown ({type(err).__name__}); please skip it "
                f"and tell an admin.", f"标注任务 {task.get('id')} 无法显示，请跳过并告知管理员。", "edit")
            state = {"task_id": task.get("id"), "kind": task.get("kind"), "shown": [],
                     "opened": time.time(), "edit_of": edit_of}
            return self._blank(progress, broken, state=state, skip=not edit_of)
        return self._task_view(task, progress, chat, texts, prefill, edit_of)

    def _blank(self, progress: str, info: str, *, state, skip: bool = False,
               start: bool = False) -> list:
        """Updates for a view with no task to label: a message, Skip when ``skip``, the admin's
        Start button when ``start``."""
        hidden = gr.update(visible=False)
        return [state, progress, info, "", hidden, gr.update(value=None), gr.update(value=None),
                gr.update(visible=False, value=""), hidden, gr.update(visible=skip), hidden,
                *[hidden] * len(self.rows), *[hidden] * len(self.cols), *[""] * len(self.cards),
                *[gr.update(visible=False, value=None)] * len(self.ranks), gr.update(visible=start)]

    def _task_view(self, task: dict, progress: str, chat: str, texts: list[str],
                   prefill: dict | None, edit_of: str | None) -> list:
        k = len(task["responses"])
        shown = [r["id"] for r in task["responses"]]
        pairwise = task["kind"] == "pairwise"
        state = {"task_id": task["id"], "kind": task["kind"], "shown": shown,
                 "opened": time.time(), "edit_of": edit_of}
        if edit_of:
            info = render.message_html(f"Editing your label {edit_of[:8]} of task {task['id']}",
                                       f"正在编辑标注任务 {task['id']} 的标注 {edit_of[:8]}", "edit")
        else:
            info = render.message_html(
                f"Task {task['id']} · round {task['round']} · " + (
                    "pairwise" if pairwise else f"rank the {k} responses: 1 = best, same number = tie"),
                f"标注任务 {task['id']} · 第 {task['round']} 轮 · " + (
                    "成对比较" if pairwise else f"为 {k} 个回答排序：1 = 最好，相同数字 = 并列"),
                "info")
        ranks_given = {}
        choice = margin = None
        if prefill:
            ranking = prefill["ranking"]
            ranks_given = {rid: gi + 1 for gi, g in enumerate(ranking) for rid in g}
            if pairwise:
                choice = "tie" if len(ranking) == 1 else ("A" if ranking[0][0] == shown[0] else "B")
                margin = prefill.get("margin_level")
        where = slots(k)  # response i → card slot
        at = {slot: i for i, slot in enumerate(where)}  # card slot → response i
        rank_choices = [str(n) for n in range(1, k + 1)]
        return [
            state, progress, info, chat,
            gr.update(visible=pairwise), gr.update(value=choice), gr.update(value=margin),
            gr.update(visible=True, value=(prefill or {}).get("rationale") or ""),
            gr.update(visible=True), gr.update(visible=not edit_of), gr.update(visible=bool(edit_of)),
            *[gr.update(visible=any(slot // COLS == r for slot in where)) for r in range(ROWS)],
            *[gr.update(visible=slot in at) for slot in range(len(self.cols))],
            *[texts[at[slot]] if slot in at else "" for slot in range(len(self.cards))],
            *[gr.update(visible=not pairwise and slot in at, choices=rank_choices,
                        value=str(ranks_given[shown[at[slot]]])
                        if slot in at and shown[at[slot]] in ranks_given else None)
              for slot in range(len(self.ranks))],
            gr.update(visible=False),
        ]

    # -- handlers (each checks the caller through the service) --------------------------------
    @keeps_view
    def on_open(self, request: gr.Request):
        """The page opens: annotators get their next task; admins get a Start button instead,
        so an admin who came to import or train holds no task for 30 minutes."""
        user = username(request)
        if self.studio.role(user) != "admin":
            return self.task_updates(user, self.studio.next_task(user))
        p = self.studio.progress(user)
        ask = render.message_html("Press Start annotating to get a task.",
                                  "点击“开始标注”领取一个标注任务。", "info")
        return self._blank(render.progress_html(p["done_today"], p["done_total"], p["left"]),
                           ask, state=None, start=True)

    @keeps_view
    def show_next(self, request: gr.Request):
        user = username(request)
        return self.task_updates(user, self.studio.next_task(user))

    @keeps_view
    async def on_submit(self, values: dict, request: gr.Request):
        """On the server's event loop, as the API's submit_label: the wait for the label's
        COMMIT is awaited, not a worker thread blocked (which then fought the event loop for
        the GIL at every step of the next task's view: BENCHMARKS.md, the browser's round trip)."""
        user = self.studio.require(username(request))
        state, choice, margin = values[self.state], values[self.choice], values[self.margin]
        ranks = [values[self.ranks[slot]] for slot in slots(len(state["shown"]))] if state else []
        if not state:
            raise StoreError("there is no task on screen; reload the page")
        shown = state["shown"]
        if state["kind"] == "pairwise":
            if choice not in ("A", "B", "tie"):
                raise StoreError("choose A, B or tie first")
            if choice != "tie" and not margin:
                raise StoreError("choose by how much the better response is better")
            a, b = shown
            ranking = [[a, b]] if choice == "tie" else ([[a], [b]] if choice == "A" else [[b], [a]])
        else:
            given = ranks
            if any(r in (None, "") for r in given):
                missing = ", ".join(LETTERS[i] for i, r in enumerate(given) if r in (None, ""))
                raise StoreError(f"give every response a rank (missing: {missing})")
            order = sorted({int(r) for r in given})
            ranking = [[shown[i] for i, r in enumerate(given) if int(r) == level] for level in order]
            margin = None
        await asyncio.wrap_future(self.studio.submit_label_later(
            user, state["task_id"], ranking, margin if choice != "tie" else None,
            values[self.rationale], duration_ms=int(1000 * (time.time() - state["opened"]))))
        notify("Saved", "已保存", duration=2)
        return self.task_updates(user, await claim_next_view(self.studio, user))

    @keeps_view
    def on_skip(self, state, request: gr.Request):
        user = username(request)
        if state and not state.get("edit_of"):
            self.studio.skip_task(user, state["task_id"])
        return self.task_updates(user, self.studio.next_task(user))

    @keeps_view
    def on_undo(self, request: gr.Request):
        """Retract my newest label and put its task back on screen, answered as before."""
        user = self.studio.require(username(request))
        mine = self.studio.my_labels(user, limit=1)
        if not mine:
            raise StoreError("you have no label to undo")
        self.studio.undo_label(user, mine[0]["label_id"])
        notify("Undone", "已撤销", duration=2)
        return self.task_updates(user, self.studio.task_view(user, mine[0]["task_id"]),
                                 prefill=mine[0])

    @keeps_view
    def my_labels(self, request: gr.Request):
        user = username(request)
        rows = self.studio.my_labels(user, limit=100)
        table = []
        for r in rows:
            shown = self.studio.task_view(user, r["task_id"])["responses"]
            table.append({"label": r["label_id"][:8], "task": r["task_id"], "kind": r["kind"],
                          "ranking": ranking_text(r["ranking"], [s["id"] for s in shown]),
                          "margin": r["margin_level"] or "", "rationale": r["rationale"] or "",
                          "when": str(r["created_at"])[:19]})
        choices = [(f"{x['when']} · {x['task']} · {x['ranking']}", r["label_id"])
                   for x, r in zip(table, rows)]
        return (frame(table, ["label", "task", "kind", "ranking", "margin", "rationale", "when"]),
                gr.update(choices=choices, value=choices[0][1] if choices else None))

    @keeps_view
    def on_edit(self, label_id, request: gr.Request):
        user = username(request)
        if not label_id:
            raise StoreError("pick one of your labels first")
        row = self.studio.my_label(user, label_id)
        task = self.studio.task_view(user, row["task_id"])
        return [*self.task_updates(user, task, prefill=row, edit_of=label_id),
                gr.Tabs(selected="annotate")]
