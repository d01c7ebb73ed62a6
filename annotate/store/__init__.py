"""The store: the only code in prefstudio that speaks SQL.

    from annotate import store
    db = store.Store("workspace/prefstudio.duckdb")
    store.pairs(db, source="human", min_agreement=0.5)
"""
from .db import Store, StoreBusy, StoreError, canonical_json, content_id
from .batch import RowError, write_batch
from .heldout import held_out_ids, held_out_task_ids, mark_held_out, prompt_messages
from .promptsets import (current_label_count, prompt_of_row, prompt_sets, select_prompts,
                         usual_overlap)
from .ingest import ingest_run_dir
from . import priorities
from .items import (add_prompts, add_responses, add_tasks, canonical_prompt_id, check_messages,
                    counts, get_full_tasks, get_task, get_tasks, list_prompts, list_responses,
                    list_tasks, prompt_id, prompt_row,
                    response_id, response_row, set_required_labels, task_id, task_row)
from .items import prompts_needing_responses
from .judging import ai_labels, tasks_lacking_label
from .labels import (add_labels, check_ranking, current_label, imported_label_id, label_history,
                     label_row, margin_levels, mark_superseded, retract_label,
                     supersede_label)
from .pairs import label_pairs, label_pairs_table, pairs, pairs_sql, pairs_table, rankings
from .runs import (add_metrics, add_scores, create_run, get_run, lineage, list_runs, metrics,
                   reopen_run, update_run)
from .schema import LATEST as SCHEMA_VERSION
from .users import (add_user, ensure_first_admin, list_users, role_of, session_stamp, set_password,
                    set_role, verify_user)
from .browse import TABLES, browse, human_labels, task_ids, user_stats
from .queue import (LEASE_S, my_labels, next_task, open_claims, shown_order, skip_task,
                    submit_label, submit_label_later, undo_label, upcoming_tasks)
from .queue import progress as queue_progress
