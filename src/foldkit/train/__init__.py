"""Training one fold after another: the run builder every entry point gets its run from (`builder`), the
settings checks (`checks`), the readable loop (`fit`) with a fold's loaders (`loaders`), model and optimizer
(`training`) and resume state (`resume`), which epoch a fold keeps and the constant answer it must beat
(`selection`), one epoch and one step (`engine`), what a student learns from a teacher
(`teacher`), the learning-rate range test (`lrfind`), fold-parallel workers (`foldpool`), the
per-fold lock (`foldlock`), --batch-size auto (`autobatch`), experiment trackers (`trackers`).

May import: everything below it (ground floor, runtime/, data/, folds/, predict/).
"""
