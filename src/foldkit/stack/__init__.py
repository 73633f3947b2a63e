"""Stacking: the image experiments' out-of-fold predictions and the competition's table in gradient-boosted
trees, fold-safe by construction (stack.py, issue 29).

    features   the table's feature columns (chosen, typed numeric or categorical, encoded; the bad-input
               lines) and the image experiments' OOF predictions as features
    boost      one booster (LightGBM when installed, else scikit-learn's HistGradientBoosting; XGBoost or
               CatBoost when asked for): early stopping on an inner split of the training rows, refit on all
               of them, the features' importance
    stacking   stack.py's job: fold k's trees fitted on the other folds' rows only, validated on fold k;
               table-only, image-only and stacked side by side; the stacked experiment in models/<name>/;
               the test rows' features (predict's fold ensemble of each image experiment) and the submission

May import: the ground floor, data/ and folds/. Never predict/ (it sits above: predict.stacked applies a
stack's trees to the test rows, and what stack.py needs of predict, such as the CV's threshold scorer, the
CLI hands down), train/, report/ or above.
"""
