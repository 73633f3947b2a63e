"""Choosing among many runs: the hyperparameter search (`tune`), the time-boxed portfolio
(`auto`) and the table of every experiment (`leaderboard`). Every run here is built by
train/'s run builder, the same way train.py builds one.

May import: every floor below it.
"""
