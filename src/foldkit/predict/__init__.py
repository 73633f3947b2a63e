"""From trained fold checkpoints to a validated submission: loading members and predicting test
images (`inference`), the plan that combines folds, experiments and post-processing (`blend`),
post-processing fitted on OOF (`calibrate`), the submission file in the sample's shape
(`submission`), and predict.py's job (`predicting`).

May import: the ground floor, runtime/, data/ and folds/. Never train/ (a teacher's student uses
predict/, not the other way round) and never the report's page.
"""
