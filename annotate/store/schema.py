"""The schema, as numbered migrations. ``Store`` applies the missing ones in order on open.

Never edit a migration that has shipped: add the next one. A database records the version it
is at in ``schema_version``; a database newer than this code is refused, not downgraded.
No foreign keys: DuckDB cannot update a row that a foreign key points at, and labels are
updated (``superseded_by``) — the store checks references in code instead.
"""

MIGRATIONS: list[str] = [
    # 1: the data model of DESIGN.md
    """
    CREATE TABLE prompts (
        id          VARCHAR PRIMARY KEY,        -- content-derived: sha256 of the messages
        messages    JSON NOT NULL,              -- [{"role": ..., "content": ...}, ...]
        source      VARCHAR,
        tags        VARCHAR[] NOT NULL DEFAULT [],
        created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    CREATE TABLE responses (
        id          VARCHAR PRIMARY KEY,        -- content-derived: prompt id + text
        prompt_id   VARCHAR NOT NULL,
        text        VARCHAR NOT NULL,
        model       VARCHAR,
        adapter     VARCHAR,
        run_id      VARCHAR,
        gen_params  JSON,
        created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    CREATE TABLE tasks (
        id              VARCHAR PRIMARY KEY,    -- content-derived: kind + prompt + responses
        prompt_id       VARCHAR NOT NULL,
        response_ids    VARCHAR[] NOT NULL,
        kind            VARCHAR NOT NULL CHECK (kind IN ('pairwise', 'ranking')),
        round           INTEGER NOT NULL DEFAULT 0,
        required_labels INTEGER NOT NULL DEFAULT 1,
        created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    CREATE TABLE labels (
        id            VARCHAR PRIMARY KEY,
        task_id       VARCHAR NOT NULL,
        annotator     VARCHAR NOT NULL,         -- a user name, or the judge's name for AI labels
        source        VARCHAR NOT NULL CHECK (source IN ('human', 'ai')),
        judge         VARCHAR,                  -- judge spec for AI labels
        ranking       VARCHAR[][] NOT NULL,     -- tie groups of response ids, best first
        margin_level  VARCHAR,                  -- a margin_levels.level, or NULL
        soft_prob     DOUBLE,                   -- p(first group preferred), AI labels
        rationale     VARCHAR,
        shown_order   VARCHAR[],                -- response ids in the order the labeller saw them
        duration_ms   BIGINT,
        created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
        superseded_by VARCHAR                   -- labels are never deleted: an edit points here
    );
    CREATE TABLE margin_levels (               -- Llama 2 §3.2.1, the "small" margin column
        level VARCHAR PRIMARY KEY,
        value DOUBLE NOT NULL,
        strength INTEGER NOT NULL               -- 3 = strongest preference
    );
    INSERT INTO margin_levels VALUES
        ('significantly', 1.0, 3), ('better', 2.0 / 3, 2),
        ('slightly', 1.0 / 3, 1), ('negligibly', 0.0, 0);
    CREATE TABLE users (
        name          VARCHAR PRIMARY KEY,
        role          VARCHAR NOT NULL CHECK (role IN ('admin', 'annotator')),
        password_hash VARCHAR NOT NULL,
        created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    CREATE TABLE runs (
        id           VARCHAR PRIMARY KEY,
        kind         VARCHAR NOT NULL,
        config       JSON,
        status       VARCHAR NOT NULL,          -- queued | running | done | failed | stopped
        pid          INTEGER,
        log_path     VARCHAR,
        artifact_dir VARCHAR,
        parents      VARCHAR[] NOT NULL DEFAULT [],
        data_hash    VARCHAR,
        started_at   TIMESTAMP,
        finished_at  TIMESTAMP
    );
    CREATE TABLE metrics (
        run_id VARCHAR NOT NULL,
        step   BIGINT NOT NULL,
        name   VARCHAR NOT NULL,
        value  DOUBLE,
        PRIMARY KEY (run_id, step, name)
    );
    """,
    # 2: what judges, the queue, lineage and rejection sampling need
    """
    ALTER TABLE labels ADD COLUMN principle VARCHAR;
    ALTER TABLE labels ADD COLUMN details JSON;     -- raw verdicts of both orders, etc.
    ALTER TABLE runs ADD COLUMN error VARCHAR;
    CREATE TABLE run_inputs (                       -- which labels trained which run
        run_id   VARCHAR NOT NULL,
        label_id VARCHAR NOT NULL,
        PRIMARY KEY (run_id, label_id)
    );
    CREATE TABLE scores (                           -- reward-model scores, RS keep decisions
        response_id VARCHAR NOT NULL,
        scorer      VARCHAR NOT NULL,
        value       DOUBLE NOT NULL,
        run_id      VARCHAR,
        kept        BOOLEAN,
        PRIMARY KEY (response_id, scorer)
    );
    CREATE TABLE claims (                           -- a task handed to an annotator, not yet labelled
        task_id    VARCHAR NOT NULL,
        annotator  VARCHAR NOT NULL,
        claimed_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (task_id, annotator)
    );
    CREATE TABLE settings (
        key   VARCHAR PRIMARY KEY,
        value JSON
    );
    """,
    # 3: the queue's skips ("skip, and come back later": skipped tasks go to the back)
    """
    CREATE TABLE skips (
        task_id    VARCHAR NOT NULL,
        annotator  VARCHAR NOT NULL,
        skipped_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (task_id, annotator)
    );
    """,
    # 4: prompts and responses without primary keys, their ids stored uncompressed. Their ids
    #    are content hashes that the one writer deduplicates with anti-joins (store.ingest,
    #    items.insert_rows); no query looks a prompt or response up by id through the index
    #    (joins hash, get_task scans), so the ART indexes only cost: with ids uncompressed
    #    too, writing a 100k-line pairs import took 30% less (BENCHMARKS.md). Random hex ids
    #    do not compress. Tasks and labels keep their keys: the queue looks them up by id.
    """
    CREATE TABLE prompts_v4 (
        id          VARCHAR NOT NULL USING COMPRESSION uncompressed,   -- sha256 of the messages
        messages    JSON NOT NULL,
        source      VARCHAR,
        tags        VARCHAR[] NOT NULL DEFAULT [],
        created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    INSERT INTO prompts_v4 SELECT id, messages, source, tags, created_at FROM prompts;
    DROP TABLE prompts;
    ALTER TABLE prompts_v4 RENAME TO prompts;
    CREATE TABLE responses_v4 (
        id          VARCHAR NOT NULL USING COMPRESSION uncompressed,   -- prompt id + text
        prompt_id   VARCHAR NOT NULL USING COMPRESSION uncompressed,
        text        VARCHAR NOT NULL,
        model       VARCHAR,
        adapter     VARCHAR,
        run_id      VARCHAR,
        gen_params  JSON,
        created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    INSERT INTO responses_v4
        SELECT id, prompt_id, text, model, adapter, run_id, gen_params, created_at FROM responses;
    DROP TABLE responses;
    ALTER TABLE responses_v4 RENAME TO responses;
    """,
    # 5: held-out prompts: policy training never samples them, `eval policy` measures on them.
    #    A column (every writer of prompts names its columns, so the default applies to them).
    """
    ALTER TABLE prompts ADD COLUMN held_out BOOLEAN DEFAULT false;
    """,
    # 6: active selection: a queue-order job's rank of each task under one order and reward
    #    model (rm '' for orders without one); the chosen order per round is in settings
    """
    CREATE TABLE task_priorities (
        order_name VARCHAR NOT NULL,            -- uncertainty | disagreement | diverse | mix
        rm         VARCHAR NOT NULL,            -- the reward model's run id, '' for diverse
        task_id    VARCHAR NOT NULL,
        rank       INTEGER NOT NULL,            -- 0 = label first
        score      DOUBLE,                      -- what the rank came from (for people)
        cluster    INTEGER,                     -- diverse, mix: the prompt's k-means cluster
        run_id     VARCHAR NOT NULL,            -- the queue-order job
        scored_at  TIMESTAMP NOT NULL,
        PRIMARY KEY (order_name, rm, task_id)
    );
    """,
]

LATEST = len(MIGRATIONS)
