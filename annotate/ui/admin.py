"""The admin's tabs: import, browse and export, agreement, users and overlap.

The tabs are hidden from annotators, but hiding is not the protection: every handler asks
the service, which checks the caller's role in the store on each call.
"""
from __future__ import annotations

import json

import gradio as gr

from .. import store
from . import render
from .common import frame, keeps_view, notify, private, shows_errors, username
from .jobs_tab import JobsTab
from .models import ModelsView
from .queueorder import QueueOrderPanel
from .service import Studio

FORMATS = ["auto", "hh", "pairs", "rankings", "prompts", "responses"]
PREVIEW = 300  # characters of each text shown in the browser


def _num(value, cast=int):
    """An optional number typed in a box: empty means 'no filter', anything else must parse."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value != value:
        return None
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise store.StoreError(f"{value!r} is not a number") from None


def readable(rows: list[dict]) -> list[dict]:
    """Show a prompt's chat JSON as 'user: … ⏎ assistant: …' instead of raw JSON."""
    for row in rows:
        text = row.get("text")
        if isinstance(text, str) and text.startswith("[{"):
            try:
                turns = json.loads(text)
                row["text"] = " ⏎ ".join(f"{m['role']}: {m['content']}" for m in turns)
            except (ValueError, KeyError, TypeError):
                pass
        for key, value in row.items():
            if isinstance(value, str) and len(value) > PREVIEW:
                row[key] = value[:PREVIEW] + "…"
    return rows


class AdminView:
    def __init__(self, studio: Studio, t: gr.I18n):
        self.studio = studio
        self.t = t
        self.tabs: list[gr.Tab] = []
        self.models = ModelsView(studio, t)
        self.queue_order = QueueOrderPanel(studio, t)

    def build(self) -> None:
        t = self.t
        with gr.Tab(t("tab_import"), id="import", visible=False) as tab:
            self.tabs.append(tab)
            self.upload = gr.File(label=t("import_file"), type="filepath", elem_id="ps-upload",
                                  file_types=[".jsonl", ".json", ".csv", ".parquet"])
            with gr.Row():
                self.fmt = gr.Dropdown(FORMATS, value="auto", label=t("format"))
                self.round = gr.Number(0, precision=0, label=t("round"), minimum=0)
                self.required = gr.Number(1, precision=0, label=t("required_labels"), minimum=1)
            self.do_import = gr.Button(t("do_import"), variant="primary", elem_id="ps-do-import")
            self.import_result = gr.JSON(label=t("result"), elem_id="ps-import-result")

        with gr.Tab(t("tab_browse"), id="browse", visible=False) as tab:
            self.tabs.append(tab)
            with gr.Row():
                self.table = gr.Dropdown(list(store.TABLES), value="tasks", label=t("table"),
                                         elem_id="ps-table")
                self.contains = gr.Textbox(label=t("contains"))
                self.b_source = gr.Dropdown(["", "human", "ai", "both"], value="", label=t("source"))
                self.b_annotator = gr.Textbox(label=t("annotator"))
                self.b_kind = gr.Dropdown(["", "pairwise", "ranking"], value="", label=t("kind"))
                self.b_round = gr.Textbox(label=t("round"), placeholder="any", max_lines=1)
                self.b_min = gr.Textbox(label=t("min_agreement"), placeholder="0–1", max_lines=1)
            self.show = gr.Button(t("show"), elem_id="ps-show")
            self.rows = gr.Dataframe(interactive=False, wrap=True, elem_id="ps-browse",
                                     max_height=600, elem_classes="ps-i18n-table")
            with gr.Row():
                self.export = gr.Button(t("export_pairs"), elem_id="ps-export")
                self.export_file = gr.File(label=t("pairs_file"), elem_id="ps-export-file", height=60)
            self.models.build_held_out()

        with gr.Tab(t("tab_agreement"), id="agreement", visible=False) as tab:
            self.tabs.append(tab)
            with gr.Row():
                self.a_source = gr.Radio(["human", "ai", "both"], value="human", label=t("source"))
                self.compute = gr.Button(t("compute"), elem_id="ps-compute")
            self.summary = gr.HTML(elem_id="ps-agreement", js_on_load=None)
            self.per_annotator = gr.Dataframe(label=t("per_annotator"), interactive=False,
                                              elem_id="ps-per-annotator", elem_classes="ps-i18n-table")
            self.per_task_note = gr.HTML(elem_id="ps-per-task-note", js_on_load=None)
            # (the note travels through a State, which API clients do not see, so the public
            # `agreement` endpoint keeps its three outputs)
            self.per_task_reason = gr.State(False)   # True: the per-task table is empty
            self.per_task = gr.Dataframe(label=t("per_task"), interactive=False, max_height=400,
                                         elem_id="ps-per-task", elem_classes="ps-i18n-table")

        with gr.Tab(t("tab_users"), id="users", visible=False) as tab:
            self.tabs.append(tab)
            self.users_tab = tab
            self.user_table = gr.Dataframe(label=t("users"), interactive=False, elem_id="ps-users",
                                           elem_classes="ps-i18n-table")
            with gr.Row():
                self.u_name = gr.Textbox(label=t("name"), elem_id="ps-user-name")
                self.u_role = gr.Dropdown(["annotator", "admin"], value="annotator", label=t("role"))
                self.u_password = gr.Textbox(label=t("password"), type="password",
                                             elem_id="ps-user-password")
            with gr.Row():
                self.add_user = gr.Button(t("add_user"), elem_id="ps-add-user")
                self.set_role = gr.Button(t("set_role"), elem_id="ps-set-role")
                self.set_password = gr.Button(t("set_password"), elem_id="ps-set-password")
            with gr.Row():
                self.overlap = gr.Number(None, precision=0, minimum=1, label=t("overlap"),
                                         elem_id="ps-overlap")  # filled with the current value
                self.overlap_round = gr.Textbox(label=t("overlap_round"), placeholder="all", max_lines=1)
                self.set_overlap = gr.Button(t("set_overlap"), elem_id="ps-set-overlap")
            self.overlap_result = gr.JSON(label=t("result"))
            self.queue_order.build()

        self.jobs = JobsTab(self.studio, t)
        self.tabs.append(self.jobs.build())
        self.tabs.append(self.models.build())

    def wire(self, demo: gr.Blocks) -> None:
        self.do_import.click(self.import_file, [self.upload, self.fmt, self.round, self.required],
                             self.import_result, api_name="import_file")
        self.show.click(self.browse, [self.table, self.contains, self.b_source, self.b_annotator,
                                      self.b_kind, self.b_round, self.b_min], self.rows,
                        api_name="browse")
        self.export.click(self.export_pairs, [self.b_source, self.b_min], self.export_file,
                          api_name="export_pairs")
        self.compute.click(self.agreement, [self.a_source],
                           [self.summary, self.per_annotator, self.per_task, self.per_task_reason],
                           api_name="agreement")
        self.per_task_reason.change(self.per_task_note_html, self.per_task_reason,
                                    self.per_task_note, **private("agreement_note"))
        self.add_user.click(self.user_add, [self.u_name, self.u_role, self.u_password],
                            [self.user_table, self.u_password], **private("add_user"))
        self.set_role.click(self.user_set_role, [self.u_name, self.u_role], self.user_table, **private("set_role"))
        self.users_tab.select(self.users_view, outputs=[self.user_table, self.overlap],
                              **private("users_tab"))
        self.set_password.click(self.user_set_password, [self.u_name, self.u_password],
                                [self.user_table, self.u_password], **private("set_password"))
        self.set_overlap.click(self.overlap_set, [self.overlap, self.overlap_round],
                               self.overlap_result, api_name="set_overlap")
        self.queue_order.wire(self.users_tab)
        self.jobs.wire(demo)
        self.models.wire(self.rows)

    # -- handlers ----------------------------------------------------------------------------
    @shows_errors
    def import_file(self, path, fmt, round, required, request: gr.Request) -> dict:
        """Import an uploaded file (admins): the same formats and checks as `prefstudio import`."""
        user = self.studio.require(username(request), admin=True)
        if not path:
            raise store.StoreError("choose a file to import first")
        return self.studio.import_file(user, path, fmt, _num(round) or 0, _num(required) or 1)

    @shows_errors
    def browse(self, table, contains, source, annotator, kind, round, min_agreement,
               request: gr.Request):
        """Rows of prompts, responses, tasks, labels or pairs, filtered (admins)."""
        rows = self.studio.browse(username(request), table or "tasks", text=contains or None,
                                  source=source or None, annotator=annotator or None,
                                  kind=kind or None, round=_num(round),
                                  min_agreement=_num(min_agreement, float), preview=None)
        return frame(readable(rows))

    @shows_errors
    def export_pairs(self, source, min_agreement, request: gr.Request) -> str:
        """The aggregated pairs as a TRL JSONL file (prompt, chosen, rejected, margin)."""
        result = self.studio.export_pairs(username(request), source or "both",
                                          _num(min_agreement, float))
        return str(result["path"])

    @shows_errors
    def agreement(self, source, request: gr.Request):
        """Agreement overall, per annotator and per task, and the position-bias rate (admins)."""
        rep = self.studio.agreement(username(request), source or "human")
        return (summary_html(rep),
                frame(rounded(rep["per_annotator"]), ["annotator", "labels", "compared",
                                             "agreement_with_majority", "labels_per_hour",
                                             "median_seconds_per_label"]),
                frame(rounded(rep["per_task"]), ["task_id", "labels", "directions", "observed_agreement"]),
                not rep["per_task"])

    @shows_errors
    def per_task_note_html(self, empty, request: gr.Request) -> str:
        """Why the per-task table is empty (one line), or nothing."""
        self.studio.require(username(request), admin=True)
        if not empty:
            return ""
        return render.message_html(
            "No task has labels from 2 or more annotators yet, so there is no per-task "
            "agreement (set the overlap to 2+ in Users & overlap).",
            "还没有被 2 人以上标注的标注任务，因此没有按标注任务的一致性（可在“用户与重叠”中把重叠设为 2 以上）。")

    @keeps_view
    def user_add(self, name, role, password, request: gr.Request):
        name = (name or "").strip()
        rows = self.studio.users(username(request), "add", name, role, password or "")
        notify(f"Added {name} ({role})", f"已添加 {name}（{'管理员' if role == 'admin' else '标注者'}）")
        return frame(rows), ""

    @keeps_view
    def user_set_role(self, name, role, request: gr.Request):
        name = (name or "").strip()
        rows = self.studio.users(username(request), "set_role", name, role)
        notify(f"{name} is now {role}", f"{name} 现在是{'管理员' if role == 'admin' else '标注者'}")
        return frame(rows)

    @keeps_view
    def user_set_password(self, name, password, request: gr.Request):
        """A new password for a user (their open sessions end; yours too if it is yours)."""
        name = (name or "").strip()
        rows = self.studio.users(username(request), "set_password", name, "", password or "")
        notify(f"Password of {name} changed", f"{name} 的密码已更改")
        return frame(rows), ""

    @shows_errors
    def user_list(self, request: gr.Request):
        return frame(self.studio.users(username(request), "list"))

    @keeps_view
    def users_view(self, request: gr.Request):
        """The user table and the overlap most tasks have now (when the tab opens)."""
        user = username(request)
        return self.user_list(request), self.studio.overlap(user)

    @shows_errors
    def overlap_set(self, required, round, request: gr.Request):
        """Set how many annotators label each task (all tasks, or one round's)."""
        return self.studio.set_overlap(username(request), _num(required) or 1, _num(round))


def _fmt(value, digits=3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# digits shown per column of the agreement tables (the report itself keeps full precision)
AGREEMENT_DIGITS = {"agreement_with_majority": 2, "labels_per_hour": 1,
                    "median_seconds_per_label": 1, "observed_agreement": 2}


def rounded(rows: list[dict]) -> list[dict]:
    return [{k: round(v, AGREEMENT_DIGITS[k]) if k in AGREEMENT_DIGITS and v is not None else v
             for k, v in row.items()} for row in rows]


def summary_html(rep: dict) -> str:
    """The overall numbers as a two-column table (values are HTML, escaped here)."""
    bias = rep["position_bias"]
    interval = bias["interval"]
    bias_text = render.escape(f"{_fmt(bias['first_shown_wins'], 2)} · n={bias['pairwise_labels']}")
    if interval:
        bias_text += f" · 95% [{interval[0]:.2f}, {interval[1]:.2f}]"
    elif bias["first_shown_wins"] is not None:
        bias_text += " · " + render.bilingual(f"no 95% interval below n = {bias['min_n']}",
                                              f"n < {bias['min_n']} 时不给出 95% 区间")
    rows = [
        (("Krippendorff's alpha (pairwise directions)", "Krippendorff α（成对方向）"),
         render.escape(_fmt(rep["alpha"], 2))),
        (("Labels", "标注数"), str(rep["labels"])),
        (("Annotators", "标注者"), str(rep["annotators"])),
        (("Directions labelled by 2+ annotators", "被 2 人以上标注的方向"),
         f"{rep['shared_units']} / {rep['units']}"),
        (("First-shown response wins (0.5 = no position bias)", "先展示的回答获胜率（0.5 = 无位置偏差）"),
         bias_text),
    ]
    body = "".join(f"<tr><td>{render.bilingual(*name)}</td><td><b>{v}</b></td></tr>"
                   for name, v in rows)
    return f'<table class="ps-summary">{body}</table>'
