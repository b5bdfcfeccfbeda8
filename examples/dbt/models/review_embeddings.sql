-- One MiniLM sentence embedding per review (FLOAT[384]), computed in batches by duckreg.
select
    review_id,
    product,
    review,
    minilm(review) as embedding
from {{ ref('reviews') }}
