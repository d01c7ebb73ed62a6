"""The admin's Jobs tab: one form per job kind, the queue of runs, and the picked run's
progress (step / total, ETA, last lines, plots), command and lineage.

The form's fields are the CLI options of the kind's command (``forms.FIELDS``, read from the
CLI's parser); picking a kind or a preset refills them. Start sends the filled fields to
``Studio.start_job`` — the very call of the ``start_job`` endpoint — as
``{dest: value}``, so the browser and a script build the same command.
"""
from __future__ import annotations

import gradio as gr

from .. import store
from . import render
from .common import frame, private, shows_errors, username
from .forms import COMMANDS, FIELDS, PICKERS, PRESETS
from .service import Studio

ALL_FIELDS = list(dict.fromkeys(d for kind in FIELDS.values() for d in kind))
CHOICE_FIELDS = (*PICKERS, "prompts", "source")
LABELS = {"source": "source", "round": "round", "min_agreement": "min_agreement"}
# metric names → the plot they go to (the first that matches)
PLOTS = (("loss", ("loss",)), ("reward", ("reward", "score", "win")), ("kl", ("kl",)),
         ("accuracy", ("acc",)))
TABLE = ["run_id", "kind", "status", "step", "max_steps", "started", "error"]


class JobsTab:
    def __init__(self, studio: Studio, t: gr.I18n):
        self.studio = studio
        self.t = t
        # the run each browser tab last asked for (Start, Stop, Resume, a pick): the timer
        # follows it, not the picker value its tick carried, since a tick that began before a
        # Start and ended after it would otherwise put the previous run back on screen for good
        self.focus: dict[str, str] = {}

    def build(self) -> gr.Tab:
        t = self.t
        with gr.Tab(t("tab_jobs"), id="jobs", visible=False) as tab:
            with gr.Row():
                self.kind = gr.Dropdown(list(COMMANDS), value="rm", label=t("job_kind"),
                                        elem_id="ps-job-kind")
                self.preset = gr.Radio(list(PRESETS), value="fast", label=t("preset"),
                                       elem_id="ps-job-preset")
            self.fields: dict[str, gr.components.Component] = {}
            with gr.Row():
                for dest in ALL_FIELDS:
                    label = t(LABELS.get(dest, f"f_{dest}"))
                    if dest in CHOICE_FIELDS:
                        self.fields[dest] = gr.Dropdown(
                            [], label=label, allow_custom_value=dest in PICKERS, visible=False,
                            elem_id=f"ps-job-{dest}", min_width=180)
                    else:
                        self.fields[dest] = gr.Textbox(label=label, max_lines=1, visible=False,
                                                       elem_id=f"ps-job-{dest}", min_width=120)
            with gr.Accordion(t("advanced"), open=False):
                self.options = gr.Textbox(label=t("job_options"), placeholder="--seed 1",
                                          max_lines=1, elem_id="ps-job-options")
            with gr.Row():
                self.start = gr.Button(t("start_job"), variant="primary", elem_id="ps-start-job")
                self.stop = gr.Button(t("stop_job"), elem_id="ps-stop-job")
                self.resume = gr.Button(t("resume_job"), elem_id="ps-resume-job")
            self.table = gr.Dataframe(label=t("runs"), interactive=False, elem_id="ps-runs",
                                      max_height=300)
            self.pick = gr.Dropdown(label=t("run_id"), choices=[], elem_id="ps-run-pick")
            self.progress = gr.HTML(elem_id="ps-run-progress", js_on_load=None)
            self.command = gr.Textbox(label=t("run_command"), interactive=False, max_lines=3,
                                      buttons=["copy"], elem_id="ps-run-command")
            with gr.Row():
                self.plots = [gr.Plot(label=t(f"{name}_plot"), visible=False,
                                      elem_id=f"ps-plot-{name}", format="png")
                              for name, _ in PLOTS]
            self.log = gr.Textbox(label=t("run_log"), interactive=False, lines=6, max_lines=12,
                                  elem_id="ps-run-log")
            self.samples = gr.Dataframe(label=t("run_samples"), interactive=False, wrap=True,
                                        visible=False, elem_id="ps-run-samples", max_height=400)
            self.info = gr.JSON(label=t("run_detail"), elem_id="ps-run-info")
            self.seen = gr.State(None)     # what the plots show now: redrawn only on a change
            self.timer = gr.Timer(3, active=False)
        return tab

    def wire(self, demo: gr.Blocks) -> None:
        form_outs = list(self.fields.values())
        gr.on([self.kind.input, self.preset.input], self.job_form, [self.kind, self.preset],
              form_outs, **private("job_form"))
        demo.load(self.job_form_on_load, [self.kind, self.preset], form_outs,
                  **private("job_form_load"))
        outs = [self.table, self.pick, self.progress, self.command, *self.plots, self.log,
                self.samples, self.info, self.seen]
        self.start.click(self.job_start, {self.kind, self.options, *self.fields.values()}, outs,
                         **private("start_job"))
        self.stop.click(self.job_stop, [self.pick], outs, **private("stop_job"))
        self.resume.click(self.job_resume, [self.pick], outs, **private("resume_job"))
        self.pick.input(self.view, [self.pick], outs, **private("run_detail"))
        self.timer.tick(self.tick, [self.pick, self.seen], outs, **private("jobs_tick"))

    # -- handlers ----------------------------------------------------------------------------
    def job_form_on_load(self, kind, preset, request: gr.Request):
        """Every page load fills the form, an annotator's too: for them, nothing (no error
        toast on their screen; the form itself stays admin-only in ``Studio.job_form``)."""
        if self.studio.role(username(request)) != "admin":
            return [gr.skip()] * len(ALL_FIELDS)
        return self.job_form(kind, preset, request)

    @shows_errors
    def job_form(self, kind, preset, request: gr.Request):
        """The kind's fields shown (preset values, picker choices), the others hidden."""
        form = self.studio.job_form(username(request), kind or "rm", preset or "fast")
        shown = {f["dest"]: f for f in form["fields"]}
        updates = []
        for dest in ALL_FIELDS:
            f = shown.get(dest)
            if f is None:
                updates.append(gr.update(visible=False, value=None))
            elif dest in CHOICE_FIELDS:
                choices = f["choices"] or []
                value = f["value"] if f["value"] in choices or dest in PICKERS else None
                updates.append(gr.update(visible=True, choices=[("", "")] * (dest == "source")
                                         + [(c, c) for c in choices], value=value or ""))
            else:
                updates.append(gr.update(visible=True, value="" if f["value"] is None
                                         else str(f["value"])))
        return updates

    @shows_errors
    def job_start(self, values: dict, request: gr.Request):
        """Queue the job the form describes (the fields of its kind that are filled in)."""
        kind = values[self.kind]
        params = {dest: values[c] for dest, c in self.fields.items()
                  if dest in FIELDS.get(kind, ()) and values[c] not in (None, "")}
        if values[self.options]:
            params["options"] = values[self.options]
        run_id = self.studio.start_job(username(request), kind, params)["run_id"]
        gr.Info(f"Queued {run_id}", duration=3)
        return self.view(run_id, request)

    @shows_errors
    def job_stop(self, run_id, request: gr.Request):
        """Stop the picked job (running, or still queued)."""
        self.studio.stop_job(username(request), self._picked(run_id, request))
        return self.view(run_id, request)

    @shows_errors
    def job_resume(self, run_id, request: gr.Request):
        """Queue the picked failed or stopped job again, from its last checkpoint."""
        self.studio.resume_job(username(request), self._picked(run_id, request))
        gr.Info(f"Resumed {run_id}", duration=3)
        return self.view(run_id, request)

    def _picked(self, run_id, request: gr.Request) -> str:
        self.studio.require(username(request), admin=True)   # (an annotator learns nothing)
        if not run_id:
            raise store.StoreError("pick a run first")
        return run_id

    @shows_errors
    def tick(self, run_id, seen, request: gr.Request):
        return self.view(self.focus.get(request.session_hash, run_id), request, seen, ask=False)

    @shows_errors
    def view(self, run_id, request: gr.Request, seen=None, ask: bool = True):
        """The runs table and the picked run's progress, command, plots, last lines, samples
        (``ask``: the user asked for this run, which the timer then follows)."""
        user = username(request)
        runs = self.studio.runs(user)
        choices = [r["run_id"] for r in runs]
        run_id = run_id if run_id in choices else (choices[0] if choices else None)
        if ask and run_id is not None and request.session_hash:
            self.focus[request.session_hash] = run_id
        table = frame(runs, TABLE)
        if run_id is None:
            hidden = [gr.update(visible=False) for _ in PLOTS]
            return (table, gr.update(choices=[], value=None), "", "", *hidden, "",
                    gr.update(visible=False), None, None)
        d = self.studio.run_detail(user, run_id)
        metrics = d.pop("metrics")
        mark = (run_id, len(metrics))
        plots = ([gr.skip() for _ in PLOTS] if mark == (tuple(seen) if seen else None)
                 else plot_updates(metrics))
        samples = d.pop("samples")
        return (table, gr.update(choices=choices, value=run_id), progress_html(d), d["command"],
                *plots, "\n".join(d.pop("log")),
                gr.update(visible=bool(samples), value=frame(samples) if samples else None),
                d, list(mark))


def plot_updates(metrics: list[dict]) -> list:
    """One update per plot: a figure of its metrics, or hidden while it has none. Drawn on the
    server (matplotlib): Gradio's Vega-Lite plots logged a version warning in the browser's
    console on every redraw and drew an axis from -Infinity while empty. A lone first point is
    drawn as a marker, so the first step already shows."""
    from matplotlib.figure import Figure   # (no pyplot: figures are built in server threads)

    taken: set[str] = set()
    updates = []
    for _, patterns in PLOTS:
        names = sorted({m["name"] for m in metrics} - taken)
        names = [n for n in names if any(p in n for p in patterns)]
        taken.update(names)
        if not names:
            updates.append(gr.update(visible=False))
            continue
        fig = Figure(figsize=(4.2, 2.4), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        for name in names:
            points = [(m["step"], m["value"]) for m in metrics
                      if m["name"] == name and m["value"] is not None]
            ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3,
                    label=name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        updates.append(gr.update(visible=True, value=fig))
    return updates


def progress_html(d: dict) -> str:
    """A progress bar: step / total, the ETA while it runs, status and error."""
    pct = 100.0 * min(1.0, d["progress"]) if d["progress"] is not None else (
        100.0 if d["status"] == "done" else 0.0)
    steps = f"{d['step']} / {d['max_steps']}" if d["max_steps"] else f"step {d['step']}"
    eta = d.get("eta_seconds")
    eta_text = (f" · {render.bilingual('ETA', '预计剩余')} {_duration(eta)}" if eta is not None else "")
    error = f' · <span class="ps-error">{render.escape(d["error"])}</span>' if d.get("error") else ""
    return (f'<div class="ps-progress"><div class="ps-bar"><div class="ps-fill" '
            f'style="width:{pct:.1f}%"></div></div><div class="ps-counts"><span>'
            f'{render.escape(d["run"])} · <b>{render.escape(d["status"])}</b> · {render.escape(steps)}'
            f'{eta_text} · {render.bilingual("labels used", "使用的标注")} {int(d["labels_used"] or 0)}'
            f'{error}</span></div></div>')


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
