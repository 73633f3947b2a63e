"""What a person reads after training and prediction: the experiment's report.html and a blend's page.

    html        write_report: one experiment's CV report (tables, figures, the page); the blend's page
    predicted   write_reports: the reports of one prediction (predict.py and auto.py hand it to run_predict)
    tables      per-class, confusion, per-label, tags together, residuals, worst errors (from the OOF rows)
    plots       the report's figures (the training curves are foldkit.figures': training draws them too)
    words       the plan, the recorded figures and the verdicts in sentences; the first screen's lines
    sections    the page's sections as HTML pieces
    page        the pieces every HTML page of the kit is built from (report.html, audit.html)
    label_noise suspected label errors (cleanlab);  gradcam  Grad-CAM heatmaps beside the gallery images

The OOF arithmetic the report shows (CV scores, OOF files, logs) is on the ground floor
(`foldkit.oof`): train/, predict/ and search/ use it without importing a page.
May import: every floor below it (ground to train/).
"""
