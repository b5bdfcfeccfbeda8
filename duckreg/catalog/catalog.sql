-- duckreg catalog. {schema} is the quoted, fully qualified registry schema ("db"."duckreg").
-- Names are stored as the user wrote them; *_key columns hold the lower-cased form that makes
-- every lookup case-insensitive. Timestamps are set by each INSERT rather than by a column DEFAULT:
-- DuckDB 1.5's Quack client cannot ATTACH a database with a DEFAULT current_timestamp column.
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.settings (
    key VARCHAR PRIMARY KEY,
    value VARCHAR
);

CREATE TABLE IF NOT EXISTS {schema}.models (
    model_key VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    comment VARCHAR,
    default_version_key VARCHAR,
    created_on TIMESTAMP NOT NULL
);

CREATE SEQUENCE IF NOT EXISTS {schema}.version_seq;

CREATE TABLE IF NOT EXISTS {schema}.versions (
    model_key VARCHAR NOT NULL,
    version_key VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    comment VARCHAR,
    task VARCHAR,
    model_type VARCHAR NOT NULL,
    artifact_path VARCHAR NOT NULL,
    manifest JSON NOT NULL,
    created_on TIMESTAMP NOT NULL,
    PRIMARY KEY (model_key, version_key)
);

CREATE TABLE IF NOT EXISTS {schema}.functions (
    model_key VARCHAR NOT NULL,
    version_key VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    target_method VARCHAR NOT NULL,
    spec JSON NOT NULL,
    PRIMARY KEY (model_key, version_key, target_method)
);

CREATE TABLE IF NOT EXISTS {schema}.aliases (
    model_key VARCHAR NOT NULL,
    alias_key VARCHAR NOT NULL,
    alias VARCHAR NOT NULL,
    version_key VARCHAR NOT NULL,
    PRIMARY KEY (model_key, alias_key)
);

CREATE TABLE IF NOT EXISTS {schema}.tags (
    model_key VARCHAR NOT NULL,
    tag_key VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    value VARCHAR NOT NULL,
    PRIMARY KEY (model_key, tag_key)
);

CREATE TABLE IF NOT EXISTS {schema}.metrics (
    model_key VARCHAR NOT NULL,
    version_key VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    value JSON,
    PRIMARY KEY (model_key, version_key, name)
);

CREATE TABLE IF NOT EXISTS {schema}.stages (
    stage_key VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    url VARCHAR NOT NULL,
    comment VARCHAR,
    created_on TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS {schema}.jobs (
    job_key VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    model_key VARCHAR NOT NULL,
    version_key VARCHAR NOT NULL,
    function_name VARCHAR NOT NULL,
    engine VARCHAR NOT NULL,
    output_location VARCHAR NOT NULL,
    spec JSON NOT NULL,
    status VARCHAR NOT NULL,
    message VARCHAR,
    pid BIGINT,
    host VARCHAR,
    rows_total BIGINT,
    rows_done BIGINT,
    rows_failed BIGINT,
    created_on TIMESTAMP NOT NULL,
    started_on TIMESTAMP,
    finished_on TIMESTAMP
);

CREATE TABLE IF NOT EXISTS {schema}.job_logs (
    job_key VARCHAR NOT NULL,
    logged_on TIMESTAMP NOT NULL,
    line VARCHAR NOT NULL
);

-- Semantic indexes: one table column's embeddings by one model version (vectors in {schema}.<vectors_table>).
CREATE TABLE IF NOT EXISTS {schema}.indexes (
    index_key VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    column_name VARCHAR NOT NULL,
    key_column VARCHAR NOT NULL,
    model_key VARCHAR NOT NULL,
    model_ref VARCHAR NOT NULL,
    version_key VARCHAR NOT NULL,
    function_name VARCHAR NOT NULL,
    vectors_table VARCHAR NOT NULL,
    dimension BIGINT NOT NULL,
    created_on TIMESTAMP NOT NULL,
    refreshed_on TIMESTAMP,
    row_count BIGINT NOT NULL,
    ann VARCHAR NOT NULL
);
