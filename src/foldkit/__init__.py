"""foldkit: a Kaggle-style image-classification starter kit (folds -> train -> predict)."""
__version__ = "0.1.0"
