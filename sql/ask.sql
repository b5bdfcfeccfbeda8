-- The best answer among the quickstart's documents to each question, in plain SQL plus the minilm function:
--   .venv/bin/duckreg run sql/ask.sql --db examples/quickstart/quickstart.duckdb
CREATE OR REPLACE TABLE questions AS
SELECT * FROM (VALUES ('Who is playing music?'), ('What is the man eating?')) t(question);

CREATE OR REPLACE TABLE answers AS
SELECT
    q.question,
    d.body,
    array_cosine_similarity(minilm(q.question), d.embedding) AS similarity
FROM questions AS q
CROSS JOIN doc_vectors AS d
QUALIFY row_number() OVER (PARTITION BY q.question ORDER BY similarity DESC) = 1;

-- The same model, called with the Snowflake syntax.
SELECT question, body, round(similarity, 3) AS similarity,
       len(MODEL(minilm, v1)!__call__(question)) AS dimensions
FROM answers
ORDER BY question;
