"""What a person reads after training and prediction: the experiment's report.html (tables,
plots, words, the page), the HTML pieces every page is built from (`page`), suspected label
errors (`label_noise`) and Grad-CAM heatmaps (`gradcam`).

The OOF arithmetic the report shows (CV scores, OOF files, logs) is on the ground floor
(`foldkit.oof`): train/, predict/ and search/ use it without importing a page.
May import: every floor below it (ground to train/).
"""
