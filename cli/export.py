"""prefstudio export: pairs, labels, rankings, prompts or responses to JSONL, CSV or Parquet."""
from __future__ import annotations

from .common import emit, open_store

HELP = "export pairs, labels, rankings, prompts or responses to JSONL, CSV or Parquet"


def add_parser(sub) -> None:
    sp = sub.add_parser("export", help=HELP, description=HELP)
    sp.add_argument("what", choices=["pairs", "labels", "rankings", "prompts", "responses"],
                    help="what to export")
    sp.add_argument("--out", required=True, help="FILE.jsonl, FILE.csv or FILE.parquet; FILE.json "
                                                 "(labelstudio); a folder (argilla, hf)")
    sp.add_argument("--format", default="auto", choices=["auto", "labelstudio", "argilla", "hf"],
                    help="auto: from --out's suffix; labelstudio or argilla: the current labels "
                         "(labels|rankings) for those tools; hf: pairs|rankings as a Hugging Face "
                         "dataset folder (Parquet shards + dataset card)")
    sp.add_argument("--source", default="both", choices=["human", "ai", "both"],
                    help="labels by people, by AI judges, or both (default both)")
    sp.add_argument("--min-agreement", type=float,
                    help="pairs: drop those with lower annotator agreement")


def run(args) -> None:
    from annotate import formats
    with open_store(args.db) as db:
        result = formats.export(db, args.what, args.out, source=args.source,
                                min_agreement=args.min_agreement, fmt=args.format)
    emit(args, result, f"wrote {result['rows']} {args.what} rows to {result['path']}")
