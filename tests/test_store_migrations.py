"""Opening an older database upgrades it in place and keeps its data."""
import duckdb
import pytest

from annotate import store
from annotate.store.schema import LATEST, MIGRATIONS


def build_v1(path):
    """A database as the first release wrote it: migration 1 only, with one labelled task."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, "
                "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")
    con.execute(MIGRATIONS[0])
    con.execute("INSERT INTO schema_version (version) VALUES (1)")
    con.execute("""INSERT INTO prompts (id, messages, source) VALUES
                   ('p1', '[{"content":"hello","role":"user"}]', 'old')""")
    con.execute("""INSERT INTO responses (id, prompt_id, text, model) VALUES
                   ('r1', 'p1', 'hi there', 'm'), ('r2', 'p1', 'go away', 'm')""")
    con.execute("""INSERT INTO tasks (id, prompt_id, response_ids, kind) VALUES
                   ('t1', 'p1', ['r1', 'r2'], 'pairwise')""")
    con.execute("""INSERT INTO labels (id, task_id, annotator, source, ranking, margin_level)
                   VALUES ('l1', 't1', 'alice', 'human', [['r1'], ['r2']], 'better')""")
    con.execute("INSERT INTO users (name, role, password_hash) VALUES ('alice', 'admin', 'x')")
    con.execute("INSERT INTO runs (id, kind, status) VALUES ('run1', 'rm', 'done')")
    con.close()


def test_a_version_1_database_is_upgraded_with_its_data_intact(tmp_path):
    path = tmp_path / "old.duckdb"
    build_v1(path)
    with store.Store(path) as db:
        assert db.version == LATEST > 1
        assert [r[0] for r in db.cursor().execute(
            "SELECT version FROM schema_version ORDER BY version").fetchall()] == list(range(1, LATEST + 1))
        (pair,) = store.pairs(db)
        assert (pair["chosen"], pair["rejected"], pair["margin_level"]) == ("hi there", "go away", "better")
        assert pair["margin"] == pytest.approx(2 / 3)
        assert store.list_users(db)[0]["name"] == "alice"
        assert store.get_run(db, "run1")["status"] == "done"
        # columns and tables of later migrations work on the old rows
        assert db.scalar("SELECT principle FROM labels WHERE id = 'l1'") is None
        store.update_run(db, "run1", error="none")
        store.add_scores(db, [{"response_id": "r1", "scorer": "rm", "value": 1.5}])
        task = store.get_task(db, "t1")
        new = store.label_row(task, "bob", [["r2"], ["r1"]], principle="harmless")
        store.add_labels(db, [new])
        assert db.scalar("SELECT count(*) FROM labels") == 2
    with store.Store(path) as db:   # opening again applies nothing twice
        assert db.scalar("SELECT count(*) FROM schema_version") == LATEST


def test_a_database_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "future.duckdb"
    with store.Store(path) as db:
        with db.write() as cur:
            cur.execute("INSERT INTO schema_version (version) VALUES (?)", [LATEST + 1])
    with pytest.raises(store.StoreError, match="upgrade prefstudio"):
        store.Store(path)


def test_read_only_open_of_an_old_database_asks_for_an_upgrade(tmp_path):
    path = tmp_path / "old.duckdb"
    build_v1(path)
    with pytest.raises(store.StoreError, match="schema upgrade"):
        store.Store(path, read_only=True)
    store.Store(path).close()
    with store.Store(path, read_only=True) as db:
        assert db.version == LATEST


def test_a_file_that_is_not_a_prefstudio_database_is_refused_read_only(tmp_path):
    path = tmp_path / "other.duckdb"
    duckdb.connect(str(path)).close()
    with pytest.raises(store.StoreError, match="not a prefstudio database"):
        store.Store(path, read_only=True)


def test_migration_4_keeps_prompts_and_responses_and_drops_only_their_keys(tmp_path):
    path = tmp_path / "old.duckdb"
    build_v1(path)
    with store.Store(path) as db:
        keyed = {r["table_name"] for r in db.query(
            "SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'")}
        assert {"tasks", "labels", "users", "runs"} <= keyed and not {"prompts", "responses"} & keyed
        assert db.query("SELECT id, source FROM prompts") == [{"id": "p1", "source": "old"}]
        assert db.scalar("SELECT string_agg(text, '|' ORDER BY id) FROM responses") == "hi there|go away"
        # uniqueness is the writer's job now: adding stored rows again adds nothing
        p = store.prompt_row("hello")
        assert store.add_prompts(db, [p, p]) == 1 and store.add_prompts(db, [p]) == 0
        r = store.response_row(p["id"], "hey")
        assert store.add_responses(db, [r, r]) == 1 and store.add_responses(db, [r]) == 0
        assert db.scalar("SELECT count(*) - count(DISTINCT id) FROM responses") == 0
        db.cursor().execute("CHECKPOINT")
        assert {r["compression"] for r in db.query(
            "SELECT compression FROM pragma_storage_info('responses') "
            "WHERE column_name IN ('id', 'prompt_id') AND segment_type = 'VARCHAR'")} == {"Uncompressed"}
