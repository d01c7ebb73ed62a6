"""The admin's Models & rounds tab, and the held-out controls of the Browse tab.

Every handler asks ``ModelOps``, which checks the caller is an admin on each call; the tab
is hidden from annotators, but hiding is not the protection. Named endpoints: models,
rounds, mark_held_out, use_as_judge, next_round_from_policy (also ``POST /api/<name>``),
compare_policies and download_adapter (a table and a file: Gradio only).
"""
from __future__ import annotations

import gradio as gr

from . import modelplots
from .common import frame, private, shows_errors, username
from .modelops import ModelOps

MODEL_COLUMNS = ["run_id", "kind", "status", "round", "labels", "accuracy", "calibration_error",
                 "reward_gain", "win_rate", "kl", "parents", "eval_run"]
ROUND_COLUMNS = ["round", "human_labels", "ai_labels", "agreement", "reward_model", "rm_accuracy",
                 "policy", "win_rate"]

LABEL_COLUMNS = ["id", "task_id", "kind", "round", "annotator", "source", "ranking", "margin",
                 "created_at", "superseded_by"]
COMPARE_COLUMNS = ["prompt", "answer_a", "reward_a", "answer_b", "reward_b"]
LABEL_COLUMNS_EMPTY = frame([], LABEL_COLUMNS)      # headers before the first click
COMPARE_EMPTY = frame([], COMPARE_COLUMNS)


def _rounded(rows: list[dict], digits: int = 3) -> list[dict]:
    return [{k: round(v, digits) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


class ModelsView:
    def __init__(self, studio, t: gr.I18n):
        self.ops = ModelOps(studio)
        self.t = t

    # -- layout ------------------------------------------------------------------------------
    def build_held_out(self) -> None:
        """Inside the Browse tab: prompt ids (a click on a prompts row adds its id) and one
        button that marks or unmarks them held out."""
        t = self.t
        with gr.Row():
            self.ho_ids = gr.Textbox(label=t("held_out_ids"), elem_id="ps-held-out-ids", scale=3)
            self.ho_mark = gr.Checkbox(True, label=t("held_out_mark"), elem_id="ps-held-out-mark")
            self.ho_apply = gr.Button(t("held_out_apply"), elem_id="ps-held-out-apply")
        self.ho_result = gr.JSON(label=t("action_result"), elem_id="ps-held-out-result")

    def build(self) -> gr.Tab:
        t = self.t
        with gr.Tab(t("tab_models"), id="models", visible=False) as tab:
            self.refresh = gr.Button(t("models_refresh"), elem_id="ps-models-refresh")
            self.table = gr.Dataframe(label=t("models_table"), interactive=False,
                                      elem_id="ps-models", max_height=300)
            gr.Markdown(t("lineage"))
            self.lineage = gr.HTML(elem_id="ps-lineage", js_on_load=None)
            gr.Markdown(t("rounds_table"))
            self.rounds = gr.Dataframe(interactive=False, elem_id="ps-rounds", max_height=250)
            self.rounds_plot = gr.HTML(elem_id="ps-rounds-plot", js_on_load=None)
            with gr.Row():
                self.pick = gr.Dropdown(label=t("model_pick"), choices=[], elem_id="ps-model-pick",
                                        allow_custom_value=True)  # scripts name any run
                self.k = gr.Number(4, precision=0, minimum=2, maximum=9, label=t("candidates_k"))
                self.prompt_set = gr.Textbox("all", label=t("prompt_set"), max_lines=1)
            with gr.Row():
                self.show_labels = gr.Button(t("show_labels"), elem_id="ps-show-labels")
                self.download = gr.Button(t("download_adapter"), elem_id="ps-download-adapter")
                self.judge = gr.Button(t("use_as_judge"), elem_id="ps-use-as-judge")
                self.next_round = gr.Button(t("next_round"), elem_id="ps-next-round")
            self.adapter_file = gr.File(label=t("adapter_file"), elem_id="ps-adapter-file", height=60)
            self.result = gr.JSON(label=t("action_result"), elem_id="ps-models-result")
            self.labels = gr.Dataframe(LABEL_COLUMNS_EMPTY, label=t("trained_labels"), interactive=False,
                                       elem_id="ps-trained-labels", max_height=300)
            with gr.Row():
                self.policy_a = gr.Dropdown(label=t("policy_a"), choices=[], elem_id="ps-policy-a",
                                        allow_custom_value=True)  # scripts name any run
                self.policy_b = gr.Dropdown(label=t("policy_b"), choices=[], elem_id="ps-policy-b",
                                        allow_custom_value=True)  # scripts name any run
                self.compare = gr.Button(t("compare"), elem_id="ps-compare")
            self.comparison = gr.Dataframe(COMPARE_EMPTY, label=t("comparison"), interactive=False, wrap=True,
                                           elem_id="ps-comparison", max_height=500)
        return tab

    def wire(self, browse_rows: gr.Dataframe) -> None:
        page = [self.table, self.lineage, self.rounds, self.rounds_plot, self.pick,
                self.policy_a, self.policy_b]
        self.refresh.click(self.page, None, page, **private("models_refresh"))
        self.show_labels.click(self.trained_labels, self.pick, self.labels, **private("models_labels"))
        self.download.click(self.download_adapter, self.pick, self.adapter_file,
                            api_name="download_adapter")
        self.judge.click(self.use_as_judge, self.pick, self.result, api_name="use_as_judge")
        self.next_round.click(self.next_round_from_policy, [self.pick, self.k, self.prompt_set],
                              self.result, api_name="next_round_from_policy")
        self.compare.click(self.compare_policies, [self.policy_a, self.policy_b], self.comparison,
                           api_name="compare_policies")
        self.ho_apply.click(self.mark_held_out, [self.ho_ids, self.ho_mark], self.ho_result,
                            api_name="mark_held_out")
        browse_rows.select(self.pick_prompt, [self.ho_ids], self.ho_ids, **private("pick_prompt"))
        gr.api(self.models, api_name="models")
        gr.api(self.rounds_table, api_name="rounds")

    def rest_handlers(self) -> dict:
        """The endpoints whose answer is JSON, for ``POST /api/<name>`` (rest.py)."""
        return {"models": self.models, "rounds": self.rounds_table,
                "mark_held_out": self.mark_held_out, "use_as_judge": self.use_as_judge,
                "next_round_from_policy": self.next_round_from_policy}

    # -- handlers ----------------------------------------------------------------------------
    @shows_errors
    def models(self, request: gr.Request) -> list[dict]:
        """Admins: every reward model and policy → [{run_id, kind, role, status, round, parents,
        labels, accuracy, calibration_error | reward_gain, win_rate, kl, eval_run}]."""
        return self.ops.models(username(request))

    @shows_errors
    def rounds_table(self, request: gr.Request) -> list[dict]:
        """Admins: per round → [{round, human_labels, ai_labels, agreement, rm_accuracy, win_rate}]."""
        return self.ops.rounds(username(request))

    @shows_errors
    def page(self, request: gr.Request):
        """The models table, lineage picture, rounds table and plot, and the pickers."""
        user = username(request)
        models = self.ops.models(user)
        rounds = self.ops.rounds(user)
        ids = [m["run_id"] for m in models]
        policies = [m["run_id"] for m in models if m["role"] == "policy"]
        return (frame(_rounded(models), MODEL_COLUMNS), modelplots.lineage_svg(self.ops.lineage(user)),
                frame(_rounded(rounds), ROUND_COLUMNS), modelplots.rounds_png(rounds),
                gr.update(choices=ids, value=ids[0] if ids else None),
                gr.update(choices=policies, value=policies[0] if policies else None),
                gr.update(choices=policies, value=policies[1] if len(policies) > 1 else None))

    @shows_errors
    def trained_labels(self, run_id, request: gr.Request):
        rows = self.ops.trained_labels(username(request), run_id)
        return frame(rows, LABEL_COLUMNS)

    @shows_errors
    def download_adapter(self, run_id, request: gr.Request) -> str:
        """Admins: a zip of the run's adapter folder (a file under the workspace's exports)."""
        return str(self.ops.adapter_zip(username(request), run_id))

    @shows_errors
    def use_as_judge(self, run_id, request: gr.Request) -> dict:
        """Admins: the reward model as judge rm:<run id> (a judge job, or its command)."""
        return self.ops.use_as_judge(username(request), run_id)

    @shows_errors
    def next_round_from_policy(self, run_id, k, prompts, request: gr.Request) -> dict:
        """Admins: K candidates per prompt from the policy into the next round's tasks."""
        return self.ops.next_round(username(request), run_id, k, prompts)

    @shows_errors
    def compare_policies(self, a, b, request: gr.Request):
        """Admins: two policies' answers to the prompts both were evaluated on, side by side."""
        return frame(_rounded(self.ops.compare(username(request), a, b)), COMPARE_COLUMNS)

    @shows_errors
    def mark_held_out(self, prompt_ids, held_out, request: gr.Request) -> dict:
        """Admins: mark (held_out true) or unmark prompts by id → {changed, held_out}."""
        return self.ops.mark_held_out(username(request), prompt_ids, held_out)

    @shows_errors
    def pick_prompt(self, ids, event: gr.EventData, request: gr.Request):
        """A click on a Browse row of prompts or tasks adds its prompt's id to the box.
        (EventData, not SelectData: a call without event data must reach the role check.)"""
        data = getattr(event, "_data", None)
        row = data.get("row_value") if isinstance(data, dict) else None
        value = self.ops.prompt_of(username(request), row[0] if isinstance(row, list) and row else None)
        if value is None or value in (ids or "").split():
            return ids
        return f"{ids} {value}".strip() if ids else value
