"""A Hugging Face dataset folder: Parquet shards under ``data/`` and a dataset card
(``README.md``) whose YAML front matter names the features and the data files, so
``datasets.load_dataset(DIR)`` reads it as it is and the Hub shows it with its card.

The card lists where the data came from (the prompts' source names, with the licence of the
public datasets prefstudio knows by name) and the label counts.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import orjson

import pyarrow as pa
import pyarrow.parquet as pq

ROWS_PER_SHARD = 100_000
# Public preference datasets by the source names they are usually imported under.
KNOWN_LICENCES = {"hh-rlhf": "mit", "hh": "mit", "ultrafeedback": "mit", "helpsteer": "cc-by-4.0",
                  "helpsteer2": "cc-by-4.0", "shp": "other", "tldr": "cc-by-4.0"}
_DTYPES = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64", pa.bool_(): "bool"}


def _type_lines(typ: pa.DataType, indent: int) -> list[str]:
    """YAML lines of one type in the ``dataset_info.features`` form ``datasets`` reads."""
    pad = " " * indent
    if typ in _DTYPES:
        return [f"{pad}dtype: {_DTYPES[typ]}"]
    if not pa.types.is_list(typ):
        raise ValueError(f"no dataset feature for {typ}")
    value = typ.value_type
    if value in _DTYPES:
        return [f"{pad}list: {_DTYPES[value]}"]
    if pa.types.is_struct(value):
        return [f"{pad}list:"] + [line for f in value for line in
                                  [f"{pad}- name: {f.name}"] + _type_lines(f.type, indent + 2)]
    return [f"{pad}list:"] + _type_lines(value, indent + 2)


def _card(what: str, schema: pa.Schema, rows: list[dict], shards: int, sources: Counter,
          pattern: str) -> str:
    features = [line for f in schema for line in [f"  - name: {f.name}"] + _type_lines(f.type, 4)]
    licences = {KNOWN_LICENCES.get(s.lower()) for s in sources}
    licence = next(iter(licences)) if len(licences) == 1 and None not in licences else "other"
    label_sources = Counter(r.get("source") for r in rows)
    lines = ["---", f"license: {licence}", "task_categories:", "- text-generation",
             "tags:", "- preference", "- rlhf", "- prefstudio",
             "configs:", "- config_name: default", "  data_files:", "  - split: train",
             f"    path: {pattern}", "dataset_info:", "  features:", *features, "---", "",
             f"# prefstudio {what}", "",
             f"Exported by `prefstudio export {what} --format hf`: {len(rows)} rows in {shards} "
             "Parquet shard(s) under `data/`. Load with `datasets.load_dataset(\"<this folder>\")`.", "",
             "## Sources", "", "| source (prompts) | prompts | licence |", "|---|---|---|"]
    lines += [f"| {s} | {n} | {KNOWN_LICENCES.get(s.lower(), 'unknown: check the original data')} |"
              for s, n in sorted(sources.items())]
    lines += ["", "## Labels", "", "| label source | rows |", "|---|---|"]
    lines += [f"| {s} | {n} |" for s, n in sorted(label_sources.items(), key=lambda kv: str(kv[0]))]
    if what == "pairs":
        lines += ["", f"Votes behind these pairs: {sum(r['n_labels'] for r in rows)} labels "
                      f"({sum(r['votes_chosen'] for r in rows)} for the chosen response, "
                      f"{sum(r['votes_rejected'] for r in rows)} against)."]
    else:
        ties = sum(any(len(g) > 1 for g in r["ranking"]) for r in rows)
        lines += ["", f"{len(rows)} labels by {len({r['annotator'] for r in rows})} annotators; "
                      f"{ties} of them hold ties."]
    return "\n".join(lines) + "\n"


def write_folder(what: str, rows: list[dict], schema: pa.Schema, out: Path, sources: Counter) -> dict:
    """Parquet shards and the card into ``out`` (a new, empty folder).

    The shard names carry a fingerprint of the rows: ``datasets`` keys its cache on the card's
    data_files pattern, so a folder exported again with other rows must not match the old pattern
    (it would load the old rows from the cache)."""
    (out / "data").mkdir(parents=True)
    shards = max(1, -(-len(rows) // ROWS_PER_SHARD))
    digest = hashlib.sha256(orjson.dumps(rows, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
    for s in range(shards):
        part = rows[s * ROWS_PER_SHARD:(s + 1) * ROWS_PER_SHARD]
        pq.write_table(pa.Table.from_pylist(part, schema=schema),
                       out / "data" / f"train-{digest}-{s:05d}-of-{shards:05d}.parquet")
    (out / "README.md").write_text(_card(what, schema, rows, shards, sources, f"data/train-{digest}-*"),
                                   encoding="utf-8")
    return {"rows": len(rows), "shards": shards}
