-- Zero-shot polarity: how close each review is to a positive and to a negative description.
with anchors as (
    select
        minilm('This was a great experience, I loved it.') as positive,
        minilm('This was a terrible experience, I hated it.') as negative
)
select
    r.review_id,
    r.product,
    r.review,
    array_cosine_similarity(r.embedding, a.positive) as positive_similarity,
    array_cosine_similarity(r.embedding, a.negative) as negative_similarity,
    case
        when array_cosine_similarity(r.embedding, a.positive) >= array_cosine_similarity(r.embedding, a.negative)
            then 'positive'
        else 'negative'
    end as polarity
from {{ ref('review_embeddings') }} as r
cross join anchors as a
where r.embedding is not null
