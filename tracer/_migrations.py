"""The store's schema, as add-only numbered migrations recorded in ``schema_migrations``.

Never edit a migration that has shipped: add the next one. docs/schema.md documents every
table and column; keep the two in step. JSON is kept in VARCHAR columns: flightrec writes it
valid by construction, and DuckDB's JSON type would parse every value again on insert.
"""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial trace store",
        """
        CREATE TABLE spans (
            trace_id VARCHAR NOT NULL,
            span_id VARCHAR NOT NULL,
            parent_span_id VARCHAR,
            session_id VARCHAR,
            name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            start_ns BIGINT NOT NULL,
            end_ns BIGINT NOT NULL,
            status_code VARCHAR NOT NULL,
            status_message VARCHAR,
            attributes VARCHAR NOT NULL,
            events VARCHAR,
            links VARCHAR,
            resource VARCHAR,
            scope VARCHAR
        );
        CREATE TABLE content (
            hash VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            body VARCHAR NOT NULL
        );
        CREATE TABLE message_chain (
            node VARCHAR PRIMARY KEY,
            prev VARCHAR,
            message VARCHAR NOT NULL,
            session_id VARCHAR
        );
        CREATE TABLE sessions (
            session_id VARCHAR PRIMARY KEY,
            trace_id VARCHAR,
            agent VARCHAR,
            start_ns BIGINT NOT NULL,
            end_ns BIGINT NOT NULL,
            ended BOOLEAN NOT NULL,
            status VARCHAR NOT NULL,
            status_reason VARCHAR,
            content_mode VARCHAR,
            turns INTEGER NOT NULL,
            llm_calls INTEGER NOT NULL,
            llm_errors INTEGER NOT NULL,
            tool_calls INTEGER NOT NULL,
            tool_errors INTEGER NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cache_read_tokens BIGINT NOT NULL,
            cache_write_tokens BIGINT NOT NULL,
            cost_usd DOUBLE NOT NULL,
            unpriced_calls INTEGER NOT NULL
        );
        CREATE TABLE turns (
            session_id VARCHAR NOT NULL,
            turn_index INTEGER NOT NULL,
            trace_id VARCHAR NOT NULL,
            span_id VARCHAR NOT NULL,
            start_ns BIGINT NOT NULL,
            end_ns BIGINT NOT NULL,
            events VARCHAR
        );
        CREATE TABLE llm_calls (
            span_id VARCHAR NOT NULL,
            trace_id VARCHAR NOT NULL,
            session_id VARCHAR,
            turn_index INTEGER,
            attempt INTEGER NOT NULL,
            start_ns BIGINT NOT NULL,
            end_ns BIGINT NOT NULL,
            status VARCHAR NOT NULL,
            error_type VARCHAR,
            http_status INTEGER,
            stream BOOLEAN NOT NULL,
            ttft_ms DOUBLE,
            model VARCHAR,
            response_model VARCHAR,
            response_id VARCHAR,
            stop_reason VARCHAR,
            action VARCHAR,
            tools_available VARCHAR[],
            tools_chosen VARCHAR[],
            reasoning VARCHAR,
            input_tokens BIGINT,
            output_tokens BIGINT,
            cache_read_tokens BIGINT,
            cache_write_tokens BIGINT,
            cost_usd DOUBLE,
            ctx_system_tokens INTEGER,
            ctx_tools_tokens INTEGER,
            ctx_history_tokens INTEGER,
            ctx_tool_results_tokens INTEGER,
            ctx_retrieved_tokens INTEGER,
            ctx_window INTEGER,
            ctx_utilisation DOUBLE,
            content_mode VARCHAR,
            request_sha256 VARCHAR,
            request_params VARCHAR,
            system_ref VARCHAR,
            messages_ref VARCHAR,
            message_count INTEGER,
            tool_refs VARCHAR[],
            response_body VARCHAR
        );
        CREATE TABLE tool_calls (
            span_id VARCHAR NOT NULL,
            trace_id VARCHAR NOT NULL,
            session_id VARCHAR,
            turn_index INTEGER,
            tool_name VARCHAR NOT NULL,
            tool_call_id VARCHAR,
            start_ns BIGINT NOT NULL,
            end_ns BIGINT NOT NULL,
            status VARCHAR NOT NULL,
            error_type VARCHAR,
            error_message VARCHAR,
            arguments VARCHAR,
            result VARCHAR,
            idempotency_key VARCHAR,
            retries INTEGER,
            circuit_state VARCHAR
        );
        """,
    ),
    Migration(
        2,
        "eval runs and results",
        """
        CREATE TABLE eval_runs (
            run_id VARCHAR PRIMARY KEY,
            started_ns BIGINT NOT NULL,
            ended_ns BIGINT NOT NULL,
            dataset VARCHAR NOT NULL,
            dataset_sha256 VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            settings VARCHAR NOT NULL,
            trials INTEGER NOT NULL,
            seed BIGINT NOT NULL,
            case_tags VARCHAR[] NOT NULL,
            cases INTEGER NOT NULL,
            passed_trials INTEGER NOT NULL,
            total_trials INTEGER NOT NULL,
            mean_score DOUBLE NOT NULL,
            cost_usd DOUBLE,
            wall_s DOUBLE NOT NULL
        );
        CREATE TABLE eval_results (
            run_id VARCHAR NOT NULL,
            case_id VARCHAR NOT NULL,
            trial INTEGER NOT NULL,
            session_id VARCHAR,
            tags VARCHAR[] NOT NULL,
            passed BOOLEAN NOT NULL,
            score DOUBLE NOT NULL,
            scores VARCHAR NOT NULL,
            error VARCHAR,
            status VARCHAR,
            turns INTEGER,
            cost_usd DOUBLE,
            latency_ms DOUBLE,
            PRIMARY KEY (run_id, case_id, trial)
        );
        CREATE TABLE eval_labels (
            label VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            set_ns BIGINT NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "alerts",
        """
        CREATE TABLE alerts (
            fingerprint VARCHAR PRIMARY KEY,
            alert_id VARCHAR NOT NULL,
            detector VARCHAR NOT NULL,
            family VARCHAR NOT NULL,
            severity VARCHAR NOT NULL,
            title VARCHAR NOT NULL,
            agent VARCHAR,
            route VARCHAR,
            session_id VARCHAR,
            turns INTEGER[] NOT NULL,
            session_ids VARCHAR[] NOT NULL,
            evidence VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            first_seen_ns BIGINT NOT NULL,
            last_seen_ns BIGINT NOT NULL,
            count INTEGER NOT NULL
        );
        CREATE TABLE alert_observations (
            fingerprint VARCHAR NOT NULL,
            observation VARCHAR NOT NULL,
            seen_ns BIGINT NOT NULL,
            PRIMARY KEY (fingerprint, observation)
        );
        """,
    ),
    Migration(
        4,
        "llm calls from other instrumentation say why they cannot be rebuilt",
        "ALTER TABLE llm_calls ADD COLUMN not_rebuildable VARCHAR;",
    ),
    Migration(
        5,
        "tool calls carry the keys the loop rules compare (tracer._loops): identity, shape and outcome",
        """
        ALTER TABLE tool_calls ADD COLUMN args_key VARCHAR;
        ALTER TABLE tool_calls ADD COLUMN shape_key VARCHAR;
        ALTER TABLE tool_calls ADD COLUMN outcome_key VARCHAR;
        """,
    ),
    Migration(
        6,
        "llm calls keep the beta features they asked for (the anthropic-beta header), so that replay asks again",
        "ALTER TABLE llm_calls ADD COLUMN betas VARCHAR[];",
    ),
    Migration(
        7,
        "an append-only audit log: who acknowledged, replayed, exported or deleted what, when, and from where",
        """
        CREATE TABLE audit_log (
            at_ns BIGINT NOT NULL,
            actor VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            target VARCHAR NOT NULL,
            via VARCHAR NOT NULL,
            detail VARCHAR NOT NULL
        );
        """,
    ),
    Migration(
        8,
        "retention: llm calls and sessions say when their content was pruned, so that replay says so",
        """
        ALTER TABLE llm_calls ADD COLUMN content_pruned_ns BIGINT;
        ALTER TABLE sessions ADD COLUMN content_pruned_ns BIGINT;
        """,
    ),
    Migration(
        9,
        "flightrec's chat spans keep in spans.attributes only what llm_calls does not hold; content keys are 128-bit",
        # No column changes: the comments say what changed, and the version keeps earlier flightrecs,
        # which would read such a chat span's attributes in part, from opening the file.
        """
        COMMENT ON COLUMN spans.attributes IS 'a flightrec chat span keeps only what its llm_calls row does not hold';
        COMMENT ON COLUMN content.hash IS 'the first 128 bits of the SHA-256 of body, in hex (64 digits before v9)';
        """,
    ),
    Migration(
        10,
        "sessions say where they come from (production, eval, replay, fork) and carry their route and tags",
        # Filled from what the store holds: a replay's or fork's session span names its kind and source
        # session, a session span may name a route (else its scenario, as the detectors read it) and tags,
        # and an eval run's results name their trials' sessions. Everything else is production. NOT NULL
        # comes before the updates: DuckDB before 2.0 fails the commit of a transaction that updates a
        # table and then alters it ("another transaction has altered this table").
        """
        ALTER TABLE sessions ADD COLUMN origin VARCHAR DEFAULT 'production';
        ALTER TABLE sessions ALTER COLUMN origin SET NOT NULL;
        ALTER TABLE sessions ADD COLUMN eval_run_id VARCHAR;
        ALTER TABLE sessions ADD COLUMN eval_case_id VARCHAR;
        ALTER TABLE sessions ADD COLUMN source_session_id VARCHAR;
        ALTER TABLE sessions ADD COLUMN route VARCHAR;
        ALTER TABLE sessions ADD COLUMN tags VARCHAR[];
        UPDATE sessions SET
            origin = coalesce(m.origin, sessions.origin), source_session_id = m.source, route = m.route, tags = m.tags
        FROM (
            SELECT session_id,
                   max(CASE WHEN kind = 'fork' THEN 'fork' WHEN kind IS NOT NULL THEN 'replay' END) AS origin,
                   max(source) FILTER (WHERE kind IS NOT NULL) AS source, max(route) AS route, max(tags) AS tags
            FROM (
                SELECT session_id, json_extract_string(attributes, '$."flightrec.replay.kind"') AS kind,
                       json_extract_string(attributes, '$."flightrec.replay.session"') AS source,
                       coalesce(json_extract_string(attributes, '$."flightrec.route"'),
                                json_extract_string(attributes, '$."flightrec.scenario"')) AS route,
                       TRY_CAST(json_extract(attributes, '$."flightrec.tags"') AS VARCHAR[]) AS tags
                FROM spans WHERE parent_span_id IS NULL OR starts_with(name, 'invoke_agent'))
            GROUP BY session_id
        ) m
        WHERE sessions.session_id = m.session_id;
        UPDATE sessions SET origin = 'eval', eval_run_id = r.run_id, eval_case_id = r.case_id, source_session_id = NULL
        FROM eval_results r WHERE sessions.session_id = r.session_id;
        """,
    ),
    Migration(
        11,
        "evaluation after deploy: online scores of sessions, outcomes recorded after the fact, human reviews; "
        "sessions started by another session (sub-agents)",
        # A session's scores are replaced as a whole when it is scored again (by session and scorer);
        # outcomes are kept as they came (the newest is the session's outcome); a review row is a
        # session in the queue until it has a verdict. A sub-agent's session names its parent
        # (``flightrec.parent_session_id`` on its root span): no store before this migration has one.
        """
        ALTER TABLE sessions ADD COLUMN parent_session_id VARCHAR;
        CREATE TABLE session_scores (
            session_id VARCHAR NOT NULL,
            scorer VARCHAR NOT NULL,
            version VARCHAR NOT NULL,
            value DOUBLE,
            passed BOOLEAN,
            weight DOUBLE NOT NULL,
            reason VARCHAR NOT NULL,
            scored_ns BIGINT NOT NULL,
            cost_usd DOUBLE,
            chosen_by VARCHAR NOT NULL DEFAULT 'sample',
            PRIMARY KEY (session_id, scorer)
        );
        CREATE TABLE session_outcomes (
            outcome_id VARCHAR PRIMARY KEY,
            session_id VARCHAR NOT NULL,
            at_ns BIGINT NOT NULL,
            resolved BOOLEAN,
            score DOUBLE,
            note VARCHAR,
            source VARCHAR NOT NULL,
            actor VARCHAR
        );
        CREATE TABLE reviews (
            session_id VARCHAR PRIMARY KEY,
            queued_by VARCHAR NOT NULL,
            queued_ns BIGINT NOT NULL,
            verdict VARCHAR,
            category VARCHAR,
            note VARCHAR,
            reviewer VARCHAR,
            reviewed_ns BIGINT
        );
        """,
    ),
    Migration(
        12,
        "span attributes, responses, reasoning, tool arguments and results are compressed with zstd",
        # DuckDB compresses strings by dictionary and FSST by default (DICT_FSST in 2.0), which suits
        # ids and repeated names, not long text unlike its neighbours: zstd stores the collector's
        # benchmark payload in about 20% fewer bytes a span, and checkpoints it faster (benchmarks/
        # RESULTS.md §77). Not content.body: a session's messages are found by hash all over that
        # table, and zstd decompresses a vector of rows to read one (a session's account took 86 ms
        # against 51 at 1M spans); the other columns are read a session's rows at a time. DuckDB sets
        # a column's compression only as the table is created, so each table is rebuilt in its
        # column order, with its rows in their order (a session's rows stay together, for the row
        # groups' zone maps).
        """
        CREATE TABLE spans_v12 (
            trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, parent_span_id VARCHAR, session_id VARCHAR,
            name VARCHAR NOT NULL, kind VARCHAR NOT NULL, start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL,
            status_code VARCHAR NOT NULL, status_message VARCHAR,
            attributes VARCHAR USING COMPRESSION zstd NOT NULL,
            events VARCHAR, links VARCHAR, resource VARCHAR, scope VARCHAR
        );
        INSERT INTO spans_v12 SELECT * FROM spans;
        DROP TABLE spans;
        ALTER TABLE spans_v12 RENAME TO spans;
        COMMENT ON COLUMN spans.attributes IS 'a flightrec chat span keeps only what its llm_calls row does not hold';
        CREATE TABLE llm_calls_v12 (
            span_id VARCHAR NOT NULL, trace_id VARCHAR NOT NULL, session_id VARCHAR, turn_index INTEGER,
            attempt INTEGER NOT NULL, start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL, status VARCHAR NOT NULL,
            error_type VARCHAR, http_status INTEGER, stream BOOLEAN NOT NULL, ttft_ms DOUBLE, model VARCHAR,
            response_model VARCHAR, response_id VARCHAR, stop_reason VARCHAR, action VARCHAR,
            tools_available VARCHAR[], tools_chosen VARCHAR[], reasoning VARCHAR USING COMPRESSION zstd,
            input_tokens BIGINT, output_tokens BIGINT, cache_read_tokens BIGINT, cache_write_tokens BIGINT,
            cost_usd DOUBLE, ctx_system_tokens INTEGER, ctx_tools_tokens INTEGER, ctx_history_tokens INTEGER,
            ctx_tool_results_tokens INTEGER, ctx_retrieved_tokens INTEGER, ctx_window INTEGER,
            ctx_utilisation DOUBLE, content_mode VARCHAR, request_sha256 VARCHAR, request_params VARCHAR,
            system_ref VARCHAR, messages_ref VARCHAR, message_count INTEGER, tool_refs VARCHAR[],
            response_body VARCHAR USING COMPRESSION zstd, not_rebuildable VARCHAR, betas VARCHAR[],
            content_pruned_ns BIGINT
        );
        INSERT INTO llm_calls_v12 SELECT * FROM llm_calls;
        DROP TABLE llm_calls;
        ALTER TABLE llm_calls_v12 RENAME TO llm_calls;
        CREATE TABLE tool_calls_v12 (
            span_id VARCHAR NOT NULL, trace_id VARCHAR NOT NULL, session_id VARCHAR, turn_index INTEGER,
            tool_name VARCHAR NOT NULL, tool_call_id VARCHAR, start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL,
            status VARCHAR NOT NULL, error_type VARCHAR, error_message VARCHAR,
            arguments VARCHAR USING COMPRESSION zstd, result VARCHAR USING COMPRESSION zstd,
            idempotency_key VARCHAR, retries INTEGER, circuit_state VARCHAR, args_key VARCHAR, shape_key VARCHAR,
            outcome_key VARCHAR
        );
        INSERT INTO tool_calls_v12 SELECT * FROM tool_calls;
        DROP TABLE tool_calls;
        ALTER TABLE tool_calls_v12 RENAME TO tool_calls;
        """,
    ),
)

LATEST = MIGRATIONS[-1].version
