"""prefstudio serve: the annotation studio in the browser (``python app.py`` does the same)."""
from __future__ import annotations

from .common import SAMPLE_PROJECT, db_path, is_default_workspace, workspace

HELP = "start the annotation studio in the browser"


def add_parser(sub) -> None:
    sp = sub.add_parser("serve", help=HELP, description=HELP)
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")


def run(args) -> None:
    from annotate import formats, store
    from annotate.ui import serve

    path = db_path(args.db)
    if not path.exists() and is_default_workspace(args.db) and SAMPLE_PROJECT.exists():
        # the studio's first start on the default workspace: something to label at once
        with store.Store(path) as db:
            formats.load_sample_project(db, SAMPLE_PROJECT)
    serve(db_path=path, host=args.host, port=args.port, workspace=workspace(args.db))
