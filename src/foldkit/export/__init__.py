"""Offline inference: export.py's bundle of weights, wheel, scripts and manifest (`build`), the
bundle's own runners at prediction time (`bundle`, shipped inside the wheel), its int8 models
scored against fp32 on the OOF (`int8`), a stacked experiment's trees written and applied
(`stacks`), the measured runtime estimate (`estimate`) and the push to Kaggle through the kaggle
CLI (`push`).

May import: every floor below it and report/.
"""
