"""prefstudio serve: the annotation studio in the browser (``python app.py`` does the same)."""
from __future__ import annotations

from .common import SAMPLE_PROJECT, CliError, db_path, is_default_workspace, workspace

HELP = "start the annotation studio in the browser"


def add_parser(sub) -> None:
    sp = sub.add_parser("serve", help=HELP, description=HELP)
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    sp.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                    help="another origin whose pages may act as a logged-in user, e.g. the "
                         "https address of a proxy in front (repeatable; default: only the "
                         "studio's own origin)")
    sp.add_argument("--session-hours", type=float, default=12.0,
                    help="how long a login lasts (default 12)")
    sp.add_argument("--max-jobs", type=int, default=1,
                    help="jobs (training, generation, judging, evaluation) that run at once; "
                         "the others wait in the queue (default 1: one at a time on a CPU)")


def run(args) -> None:
    from annotate import formats, store
    from annotate.ui import serve
    from annotate.ui.guard import normalise_origins

    try:
        normalise_origins(args.allow_origin)
    except ValueError as err:
        raise CliError(str(err)) from None
    if not args.session_hours > 0:
        raise CliError(f"--session-hours must be a positive number, not {args.session_hours}")
    if args.max_jobs < 1:
        raise CliError(f"--max-jobs must be at least 1, not {args.max_jobs}")
    path = db_path(args.db)
    if not path.exists() and is_default_workspace(args.db) and SAMPLE_PROJECT.exists():
        # the studio's first start on the default workspace: something to label at once
        with store.Store(path) as db:
            formats.load_sample_project(db, SAMPLE_PROJECT)
    from . import parse_command   # the studio checks a job's options with the CLI's own parser
    serve(db_path=path, host=args.host, port=args.port, workspace=workspace(args.db),
          allow_origins=args.allow_origin, session_hours=args.session_hours,
          parse_command=parse_command, max_jobs=args.max_jobs)
