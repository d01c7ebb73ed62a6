"""prefstudio import FILE: prompts, responses, pairs or rankings into the store (all or nothing)."""
from __future__ import annotations

from .common import emit, open_store

HELP = "import prompts, responses, pairs or rankings from a file (or Label Studio / Argilla labels)"
FORMATS = ["auto", "hh", "pairs", "rankings", "prompts", "responses", "labelstudio", "argilla"]


def add_parser(sub) -> None:
    sp = sub.add_parser("import", help=HELP, description=HELP)
    sp.add_argument("file", help="JSONL, CSV or Parquet file; a Label Studio JSON export; "
                                 "an Argilla dataset folder (rg.Dataset.to_disk / to_hub)")
    sp.add_argument("--format", default="auto", choices=FORMATS,
                    help="the file's format (default auto: guessed from its fields)")
    sp.add_argument("--source", help="source name stored with the prompts (default: file name)")
    sp.add_argument("--round", type=int, default=0, help="annotation round of the new tasks")
    sp.add_argument("--required-labels", type=int, default=1,
                    help="annotators needed per new task (overlap)")
    sp.add_argument("--prompt-field", help="labelstudio/argilla: the data field holding the prompt "
                                           "(default prompt; Argilla also instruction)")
    sp.add_argument("--response-fields", help="labelstudio: the data fields compared, comma-separated "
                                              "(Pairwise toName, e.g. answer1,answer2), or the Ranker's "
                                              "list field (default items)")


def run(args) -> None:
    from annotate import formats
    with open_store(args.db) as db:
        result = formats.import_file(db, args.file, fmt=args.format, source=args.source,
                                     round=args.round, required_labels=args.required_labels,
                                     prompt_field=args.prompt_field,
                                     response_fields=args.response_fields.split(",")
                                     if args.response_fields else None)
    emit(args, result, formats.describe_import(result))
