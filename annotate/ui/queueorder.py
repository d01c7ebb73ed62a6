"""The queue order panel of the Users & overlap tab: which order the queue serves each round's
tasks in, and what each order is based on (the reward model run that ranked it, and when).

The panel calls ``Studio.set_queue_order`` / ``Studio.queue_order`` — the very calls of the
``set_queue_order`` and ``queue_order`` endpoints — which check the caller is an admin.
"""
from __future__ import annotations

import gradio as gr

from .. import store
from . import text
from .common import frame, private, shows_errors, username

text.STRINGS.update({
    "queue_order": ("### Queue order (active selection)", "### 标注队列顺序（主动选择）"),
    "queue_order_pick": ("Order", "顺序"),
    "queue_order_rm": ("Reward model (uncertainty, disagreement, mix)",
                       "奖励模型（不确定性、分歧、混合）"),
    "queue_order_round": ("Only round (empty = every round)", "仅限轮次（留空 = 所有轮次）"),
    "queue_order_set": ("Use this order", "使用此顺序"),
    "queue_order_table": ("What each order is based on", "各顺序的依据"),
})

WHAT = {   # what each order serves first (rewardmodel/active.py has the references)
    "default": "fewest labels first, in an order hashed per annotator",
    "uncertainty": "the tasks the reward model separates least (ensemble: members split first)",
    "disagreement": "the tasks where the AI judge's label and the reward model disagree",
    "diverse": "MiniLM prompt clusters (k-means), one task from each in turn",
    "mix": "the clusters in turn, the most uncertain task of each first",
}
COLUMNS = ["order", "chosen_for", "reward_model", "tasks", "rounds", "scored_at", "serves first"]


def order_rows(status: dict) -> list[dict]:
    """One row per order and reward model that ranked it (an order never ranked: one row)."""
    chosen: dict[str, list[str]] = {}
    for key, c in status["chosen"].items():
        label = "every round" if key == store.priorities.ALL_ROUNDS else f"round {key}"
        chosen.setdefault(c["order"], []).append(label + (f" ({c['rm']})" if c.get("rm") else ""))
    rows = []
    for order in store.priorities.ORDERS:
        ranked = [r for r in status["ranked"] if r["order"] == order] or [{}]
        for r in ranked:
            rows.append({"order": order, "chosen_for": ", ".join(chosen.get(order, [])),
                         "reward_model": r.get("rm") or ("-" if order not in
                                                         store.priorities.NEEDS_RM else ""),
                         "tasks": str(r.get("tasks", 0 if order != "default" else "-")),
                         "rounds": ", ".join(map(str, r.get("rounds") or [])),
                         "scored_at": str(r.get("scored_at", ""))[:19],
                         "serves first": WHAT[order]})
    return rows


class QueueOrderPanel:
    def __init__(self, studio, t: gr.I18n):
        self.studio = studio
        self.t = t

    def build(self) -> None:
        t = self.t
        gr.Markdown(t("queue_order"))
        with gr.Row():
            self.order = gr.Dropdown(list(store.priorities.ORDERS), value="default",
                                     label=t("queue_order_pick"), elem_id="ps-queue-order")
            self.rm = gr.Dropdown([], label=t("queue_order_rm"), allow_custom_value=True,
                                  elem_id="ps-queue-order-rm")
            self.round = gr.Textbox(label=t("queue_order_round"), placeholder="all", max_lines=1,
                                    elem_id="ps-queue-order-round")
            self.apply = gr.Button(t("queue_order_set"), elem_id="ps-queue-order-set")
        self.table = gr.Dataframe(frame([], COLUMNS), label=t("queue_order_table"),
                                  interactive=False, wrap=True, elem_id="ps-queue-orders")
        self.result = gr.JSON(label=t("result"), elem_id="ps-queue-order-result")

    def wire(self, tab: gr.Tab) -> None:
        self.apply.click(self.set_order, [self.order, self.rm, self.round],
                         [self.result, self.table], **private("queue_order_set"))
        tab.select(self.view, outputs=[self.table, self.rm], **private("queue_order_view"))

    @shows_errors
    def view(self, request: gr.Request):
        """The orders table and the reward models to pick from (when the tab opens)."""
        status = self.studio.queue_order(username(request))
        rms = [r["id"] for r in store.list_runs(self.studio.db)
               if r["kind"] == "rm" and r["status"] == "done"]
        return frame(order_rows(status), COLUMNS), gr.update(choices=rms)

    @shows_errors
    def set_order(self, order, rm, round_text, request: gr.Request):
        """Use ``order`` for a round (or every round); a ranking job starts when needed."""
        user = username(request)
        text_round = (round_text or "").strip()
        if text_round and not text_round.isdigit():
            raise store.StoreError(f"round must be a round number, not {text_round!r}")
        uses_rm = order in store.priorities.NEEDS_RM    # (a model left picked is not an error)
        result = self.studio.set_queue_order(user, order, (rm or None) if uses_rm else None,
                                             int(text_round) if text_round else None)
        return result, frame(order_rows(self.studio.queue_order(user)), COLUMNS)
