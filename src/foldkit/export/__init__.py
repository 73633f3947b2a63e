"""Offline inference: export.py's bundle of weights, wheel, scripts and manifest (`build`), the
bundle's own runners at prediction time (`bundle`, shipped inside the wheel) and the measured
runtime estimate (`estimate`).

May import: every floor below it and report/.
"""
