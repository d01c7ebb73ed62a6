"""The page: header (user, language switch, log out), the annotator's tabs, the admin's tabs,
the named API endpoints, and the ``launch`` settings that keep it closed to strangers."""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import gradio as gr

from .. import store
from . import text
from .admin import AdminView
from .annotator import AnnotatorView
from . import rest
from .api import add_endpoints
from .common import private, shows_errors, username
from .guard import Guard, normalise_origins
from .render import escape
from .service import Studio
from .sessions import SESSION_HOURS, LoginLimiter, Sessions, caller, login_routes


def build_app(db: store.Store, workspace: str | Path, *, allow_origins=(),
              session_hours: float = SESSION_HOURS, parse_command=None, max_jobs: int = 1):
    """The Blocks of the studio and the keyword arguments ``launch`` needs (auth, CSS, i18n…)."""
    normalise_origins(allow_origins)  # a bad --allow-origin stops here, before anything starts
    sessions, limiter = Sessions(db, session_hours), LoginLimiter()
    studio = Studio(db, workspace, parse_command, max_jobs)
    t = text.i18n()
    annotator, admin = AnnotatorView(studio, t), AdminView(studio, t)
    with gr.Blocks(title="prefstudio") as demo:
        with gr.Row(equal_height=True, elem_id="ps-header"):
            with gr.Column(scale=3):
                gr.Markdown(t("title"), elem_id="ps-title")
                whoami = gr.HTML(elem_id="ps-whoami", js_on_load=None)
            lang = gr.Radio([("English", "en"), ("中文", "zh-CN")], value="en", label=t("language"),
                            elem_id="ps-lang", scale=1, min_width=200)
            gr.Button("Log out · 退出", link="/logout", size="sm", scale=0, min_width=120,
                      elem_id="ps-logout")
        with gr.Tabs() as tabs:
            annotator.build(tabs)
            admin.build()
        annotator.wire(demo)
        admin.wire(demo)
        api = add_endpoints(studio)   # (the Gradio run route's fast path serves these)
        handlers = {**api, **admin.models.rest_handlers()}

        @shows_errors
        def on_load(request: gr.Request):
            user = username(request)
            is_admin = studio.role(user) == "admin"
            me = f'<div class="ps-me">{escape(user)} · {escape("admin" if is_admin else "annotator")}</div>'
            return [me, *[gr.update(visible=is_admin) for _ in admin.tabs],
                    admin.user_list(request) if is_admin else None, gr.Timer(active=is_admin),
                    studio.overlap(user) if is_admin else None]

        demo.load(on_load, outputs=[whoami, *admin.tabs, admin.user_table, admin.jobs.timer,
                                    admin.overlap],
                  **private("whoami"))
        demo.load(None, js=text.ON_LOAD_JS, outputs=lang, **private("restore_language"))
        lang.change(None, lang, js=text.SET_LANG_JS, **private("language"))
    demo.queue(default_concurrency_limit=8)
    api_routes, fast_paths = rest.routes(handlers, run_names=api)

    def check_login(name: str, password: str) -> bool:
        # (tells Gradio the app needs a login; the /login route itself is sessions.login_routes)
        return store.verify_user(db, name, password) is not None

    launch = dict(auth=check_login, auth_message="prefstudio", i18n=t, css=text.CSS,
                  head=text.head(), footer_links=["api", "settings"], run_history=False,
                  enable_monitoring=False, mcp_server=False, show_error=False,
                  allowed_paths=[str(studio.exports)], blocked_paths=[str(db.path.resolve()),
                                                                      str(studio.uploads)],
                  max_file_size="200mb", ssr_mode=False, pwa=False,
                  app_kwargs={"routes": [*login_routes(db, limiter), *api_routes],
                              "lifespan": _front_door(db, studio.workspace, allow_origins,
                                                      sessions, limiter, fast_paths)})
    return demo, launch, studio


def _front_door(db: store.Store, workspace: Path, allow_origins, sessions: Sessions,
                limiter: LoginLimiter, fast_paths: rest.FastPaths):
    """Put the studio's sessions and its Guard (guard.py) around the app Gradio built.

    Gradio creates the app, with its own CORS layer outermost, inside ``launch``; the server's
    start (the lifespan, before any request is served) is the first moment the finished app
    exists, and the Guard must wrap it whole to take CORS answers back.
    """
    def admin_check(scope) -> bool | None:
        user = caller(scope)
        return None if user is None else store.role_of(db, user) == "admin"

    @asynccontextmanager
    async def lifespan(app):
        app.tokens = sessions
        app.state.login_limiter = limiter  # (for tools and tests: its limits and clock)
        inner = app.middleware_stack or app.build_middleware_stack()
        if not isinstance(inner, Guard):
            app.middleware_stack = Guard(inner, allowed_origins=allow_origins,
                                         workspace=workspace, admin_check=admin_check,
                                         fast_paths=fast_paths)
        yield

    return lifespan
