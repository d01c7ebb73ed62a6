"""Import and export: hh, pairs, rankings, prompts and responses as JSONL, CSV or Parquet.

One object per line (JSONL) or row (CSV, Parquet):

    hh         {"chosen": transcript, "rejected": transcript}        Anthropic HH-RLHF
    pairs      {"prompt", "chosen", "rejected", "margin"?}            TRL, standard or conversational
    rankings   {"prompt", "responses": [...], "ranking": [[0], [2, 1], [3]]}  tie groups, best first
    prompts    {"prompt", "source"?, "tags"?}
    responses  {"prompt", "response"} or {"prompt", "responses": [...], "task"?}

A prompt is text or a list of chat messages. An import reads and validates the whole file
first, then writes it in one transaction (``store.write_batch``), so bad input changes nothing
and raises ``FormatError`` as ``FILE:LINE: FIELD: reason`` (for CSV and Parquet the line is the
row number plus one for the header). Ids are content-derived, so importing a file twice adds
nothing. docs/data.md has the full rules (duplicates, contradictions, CSV cells, limits).

The modules, each used only through its public names, in the order an import runs:

    reading    files → records (JSONL, CSV, Parquet; gz, BOM, CRLF; the size limits)
    fields     one reader per kind of field (prompt, completion, margin, ranking...)
    parsing    the general parser: records → rows for the store, deduplicated by id
    fast       the same rows for plain hh, pairs and prompts files, column by column
    importing  import_file: read, parse, write in one transaction
    export     export: the store → pairs, labels, rankings, prompts, responses files

Other tools' files, converted to rows of the rankings (and responses) format and then parsed
and written like any file; exported back from the rankings export's rows:

    documents    one JSON document holding a list of records, each with its line
    interchange  what the tools share: label records, prefstudio's own fields beside a label
    labelstudio  Label Studio's JSON export (Pairwise, Ranker projects), in and out
    argilla      Argilla v2 datasets (rg.Dataset.to_disk, to_hub), in; to_disk out
    hf           a Hugging Face dataset folder (Parquet shards + dataset card), out
"""
from .errors import FieldError, FormatError
from .export import EXPORTS, TOOL_EXPORTS, export
from .fields import MAX_K, ParseContext, split_conversations, split_transcripts
from .importing import TOOL_FORMATS, describe_import, import_file, load_sample_project, read_prompts
from .parsing import FORMATS, ParsedRows, detect_format
from .reading import MAX_FILE_BYTES, MAX_LINE_BYTES, read_records

__all__ = ["EXPORTS", "FORMATS", "MAX_FILE_BYTES", "MAX_K", "MAX_LINE_BYTES", "FieldError",
           "FormatError", "ParseContext", "ParsedRows", "TOOL_EXPORTS", "TOOL_FORMATS",
           "describe_import", "detect_format",
           "export", "import_file", "load_sample_project", "read_prompts", "read_records",
           "split_conversations", "split_transcripts"]
