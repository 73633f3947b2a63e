"""Cross-validation folds: how rows are split (stratified, grouped, multi-label, regression bins,
the test-like fold) and the folds file with its metadata (folds/train_folds.csv, folds_meta.json,
fold_counts.csv), written once and never silently replaced.

May import: the ground floor, runtime/ and data/.
"""
