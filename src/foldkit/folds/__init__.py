"""Cross-validation folds: how rows are split (`split`: stratified, grouped, multi-label, regression
bins, the test-like fold), what the split reads back from the audit's files (`audit_files`: duplicate
clusters kept in one fold, adversarial p_test), and the folds file with its metadata (`file`:
folds/train_folds.csv, folds_meta.json, fold_counts.csv), written once and never silently replaced.

May import: the ground floor, runtime/ and data/.
"""
