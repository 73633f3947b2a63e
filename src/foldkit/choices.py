"""The named choices of settings whose work lives on a higher floor: each list has its owner here, the
module that does the work builds on it, and config offers them as `--help` choices without importing
that module (or torch).

    AUG_PRESETS   --aug: preset name -> what it does (foldkit.data.augment builds each one)
    BLEND_MODES   --blend: blend name -> what it does (foldkit.predict.blend fits and combines each one)
    SWITCHES      --calibrate, --thresholds, --clip: the post-processing switches (foldkit.predict.calibrate)
"""
from __future__ import annotations

AUG_PRESETS = {
    "none": "resize (shortest side to size/crop_pct) + centre crop: no randomness",
    "light": "RandomResizedCrop(scale 0.35-1) + flips",
    "medium": "the classic Keras ImageDataGenerator recipe: rotation 30 deg, shift 0.2, zoom 0.2, + flips",
    "heavy": "RandomResizedCrop(scale 0.08-1) + flips + TrivialAugmentWide (or RandAugment with --randaugment) "
             "+ RandomErasing(p=0.25)",
}

BLEND_MODES = {
    "mean": "equal-weight mean of the experiments' probabilities",
    "geometric": "equal-weight mean of log-probabilities",
    "hill": "hill climbing (Caruana ensemble selection): from the best experiment, add with replacement the one "
            "that most improves the OOF metric; weights = counts",
    "optimize": "continuous non-negative weights summing to 1 that maximise the OOF metric (scipy.optimize: "
                "SLSQP, or Nelder-Mead for step metrics like accuracy/F1)",
    "rank": "mean of per-class ranks (for AUC)",
}

SWITCHES = ["auto", "on", "off"]
