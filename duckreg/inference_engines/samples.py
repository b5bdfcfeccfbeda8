"""Sample texts an engine is checked on at log time, when the user gives none of their own.

Varied lengths (a few words to a few hundred tokens), punctuation, numbers and casing, so an
export is compared with torch on short, long and padded batches alike.
"""

from __future__ import annotations

_SENTENCES = (
    "The quarterly report shows revenue grew by 12 percent while costs stayed flat.",
    "I loved this movie!",
    "Terrible service, we waited an hour and the food was cold.",
    "Where is the nearest train station?",
    "Paris is the capital and most populous city of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Please reset my password; I cannot log in since Tuesday.",
    "It was fine, nothing special.",
    "Shipping took 3 days and the box arrived damaged, but support replaced it quickly.",
    "Neural networks learn representations from data by adjusting millions of weights.",
    "Who wrote the novel Pride and Prejudice?",
    "Jane Austen published Pride and Prejudice in 1813.",
    "The stock fell sharply after the company missed earnings expectations.",
    "What a wonderful day for a walk in the park with the dog.",
    "The contract terminates automatically unless either party gives written notice.",
    "ok",
    "Heavy rain is expected across the northern region tomorrow morning.",
    "The new phone's battery easily lasts two days of normal use.",
    "Customers in Berlin and Munich reported outages on Friday evening.",
    "This is the worst purchase I have ever made, do not buy it.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Can you recommend a good Italian restaurant near the office?",
    "The committee approved the budget after a long debate.",
    "SELECT name FROM users WHERE id = 42",
)


def sample_texts() -> list[str]:
    """The built-in samples: every sentence, plus longer passages made by joining runs of them."""
    texts = list(_SENTENCES)
    count = len(_SENTENCES)
    for start, size in ((0, 3), (5, 6), (2, 10), (7, 24), (11, 4), (17, 8), (1, 15), (20, 5)):
        texts.append(" ".join(_SENTENCES[(start + i) % count] for i in range(size)))
    return texts
