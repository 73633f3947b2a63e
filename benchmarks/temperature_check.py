"""Test log loss of each experiment's fold ensemble, raw and with a temperature fitted on its OOF only.

    python benchmarks/temperature_check.py ROOT     # ROOT holds input/ and models/ (e.g. a bench_blend --root)

For every experiment under ROOT/models: T fitted on the OOF rows (foldkit.predict.calibrate), the OOF log
loss before and after, and the test log loss of the fold ensemble before and after (the test
labels of ROOT/input: y_test.npy, labelled test folders). Works whatever metric the experiments
were trained for.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from foldkit import metrics
from foldkit.predict import calibrate  # noqa: E402


def main(root: str) -> None:
    from foldkit.data.reading import read_competition
    from foldkit.train.engine import pick_device
    from foldkit.experiment import all_experiments
    from foldkit.predict.inference import load_members, predict_ensemble
    from foldkit.predict.predicting import make_sources
    from foldkit.oof import load_oof, prob_columns
    comp = read_competition(Path(root) / "input")
    for e in all_experiments(Path(root) / "models"):
        oof, classes = load_oof(e.dir, e.finished_folds())
        y = np.array([classes.index(v) for v in oof["label"]])
        p = oof[prob_columns(classes)].to_numpy()
        t = calibrate.fit_temperature(p, y)
        members = load_members([e])
        pt = predict_ensemble(members, make_sources(comp, comp.test, "test", members), tta=["none"],
                              device=pick_device("cpu"), progress=False)
        yt = np.array([classes.index(v) for v in comp.test["label"]])
        ll = lambda yy, pp: metrics.score("logloss", yy, pp)  # noqa: E731
        print(f"{e.name}: T={t:.3f}  OOF logloss {ll(y, p):.4f} -> {ll(y, calibrate.apply_temperature(p, t)):.4f}"
              f"  test logloss {ll(yt, pt):.4f} -> {ll(yt, calibrate.apply_temperature(pt, t)):.4f}"
              f"  (test accuracy {metrics.score('accuracy', yt, pt):.4f})")


if __name__ == "__main__":
    main(sys.argv[1])
