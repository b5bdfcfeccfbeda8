-- One MiniLM sentence embedding per review (FLOAT[384]), computed in batches by duckreg.
-- A review longer than MiniLM reads whole gets a NULL embedding instead of failing the build
-- (on_error := 'null'); `select * from duckreg_errors()` in the same session says why.
select
    review_id,
    product,
    review,
    minilm(review, on_error := 'null') as embedding
from {{ ref('reviews') }}
