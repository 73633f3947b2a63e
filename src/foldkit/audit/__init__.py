"""audit.py's job, before any training: image statistics, duplicates (exact and hash ones from
foldkit.data.copies, feature copies and the duplicate files in `duplicates`), learned embeddings for copies the hash misses (`embed`), train/test shift by
adversarial validation (`shift`), and the audit page (`run`).

May import: every floor below it and report/'s page pieces.
"""
