"""Fold-ensemble inference from self-describing checkpoints: no network, no config file.

Every image is decoded once per run: the dataset applies each distinct eval
transform of the ensemble to the one decoded image, and every model (and TTA
view) of a transform group runs on the same batch tensor.
"""
from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from foldkit.ensemble import TTA_VIEWS, EnsembleError, combine
from foldkit.experiment import Experiment
from foldkit.data.augment import eval_transform
from foldkit.data.images import ImageError, eval_size, prepare_image, preparation
from foldkit.runtime.device import mean_softmax, to_device
from foldkit.runtime.model import ModelError, load_checkpoint, model_from_checkpoint
from foldkit.tasks import TASKS, task_of


def tta_view(name: str):
    """The torch function of a view of ensemble.TTA_VIEWS (the flipped axes of an NCHW batch)."""
    axes = TTA_VIEWS[name]
    return (lambda x: torch.flip(x, dims=axes)) if axes else (lambda x: x)


class Member:
    """One model of the ensemble with what it needs to run."""

    def __init__(self, path: Path, ckpt: dict):
        self.path = path
        self.experiment = ckpt.get("config", {}).get("experiment", path.parent.name)
        self.fold = ckpt["fold"]
        self.classes = ckpt["classes"]
        self.data_config = ckpt["data_config"]
        self.in_chans = ckpt["in_chans"]
        self.folds_sha256 = ckpt.get("folds_sha256")
        self.metric = ckpt.get("metric", {})
        self.task = task_of(ckpt)                  # foldkit.tasks: the activation and the prediction's units
        self.target = ckpt.get("target")           # regression: this fold's target standardisation
        self.model = model_from_checkpoint(ckpt)

    @property
    def transform_key(self) -> str:
        d = self.data_config
        return json.dumps([d["input_size"][0], eval_size(d), d["mean"], d["std"], d["interpolation"], d["crop_pct"]])


def load_members(experiments: list[Experiment], expected_classes: list | None = None) -> list[Member]:
    """Load every finished fold of the experiments; refuse checkpoints that disagree on classes."""
    members = []
    for e in experiments:
        if e.config().get("stacked"):
            raise EnsembleError(f"experiment {e.name} is stacked (trees over image experiments' predictions): "
                                f"`python src/predict.py --experiments {e.name}` submits it and export.py bundles it; "
                                "--image does not run its trees (they need the test table's row)")
        folds = e.finished_folds()
        if not folds:
            raise EnsembleError(f"experiment {e.name}: no finished fold (fold{{k}}.pt + fold{{k}}.json)")
        for k in folds:
            try:
                ckpt = load_checkpoint(e.checkpoint(k))
            except ModelError as err:
                raise EnsembleError(str(err)) from None
            members.append(Member(e.checkpoint(k), ckpt))
    ref = members[0]
    for m in members[1:]:
        if m.task != ref.task:
            raise EnsembleError(f"{m.path} is a {m.task} model but {ref.path} is {ref.task}: models of different "
                                "task kinds cannot be ensembled")
        if [str(c) for c in m.classes] != [str(c) for c in ref.classes]:
            raise EnsembleError(f"{m.path} predicts classes {m.classes} but {ref.path} predicts {ref.classes}: "
                                "checkpoints of different class lists cannot be averaged")
    if expected_classes is not None and [str(c) for c in ref.classes] != [str(c) for c in expected_classes]:
        raise EnsembleError(f"{ref.path} was trained on classes {ref.classes}, but this competition's folds "
                            f"have {list(expected_classes)}: wrong checkpoint for this competition?")
    return members


def group_members(members: list[Member]) -> dict[str, list[Member]]:
    groups: dict[str, list[Member]] = {}
    for m in members:
        groups.setdefault(m.transform_key, []).append(m)
    return groups


class MultiViewDataset(torch.utils.data.Dataset):
    """One decode per image, one tensor per distinct eval transform (hand-written: the
    ensemble's models may want different sizes or channel counts)."""

    def __init__(self, sources: dict, transforms: dict):
        self.sources = sources          # (grey, side) -> ImageSource (images.preparation)
        self.transforms = transforms    # key -> ((grey, side), transform)

    def __len__(self):
        return len(next(iter(self.sources.values())))

    def __getitem__(self, i):
        imgs = {g: torch.from_numpy(np.ascontiguousarray(s[i])).permute(2, 0, 1) for g, s in self.sources.items()}
        return {k: tf(imgs[g]) for k, (g, tf) in self.transforms.items()}


@torch.no_grad()
def predict_ensemble(members: list[Member], sources: dict, *, tta: list[str], device, dtype=None,
                     channels_last=False, batch_size=128, workers=0, how="mean", progress=True,
                     return_members=False):
    """Predictions of the ensemble (and per member when asked), decoding each image once: (N, C) softmax
    probabilities, (N, L) sigmoid probabilities (multi-label) or (N, 1) numbers (regression), as
    foldkit.tasks.Task.to_predictions makes them from each member's outputs."""
    groups = group_members(members)
    transforms = {k: (preparation(ms[0].in_chans, ms[0].data_config), eval_transform(ms[0].data_config))
                  for k, ms in groups.items()}
    ds = MultiViewDataset(sources, transforms)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                     pin_memory=device.type == "cuda")
    views = [tta_view(t) for t in tta or ["none"]]
    for m in members:
        m.model.to(device).eval()
        if channels_last:
            m.model.to(memory_format=torch.channels_last)
    out = {id(m): [] for m in members}
    for batch in tqdm(dl, desc=f"predicting ({len(members)} models x {len(views)} views)", leave=False,
                      disable=None if progress else True, unit="batch"):
        for key, ms in groups.items():
            x = to_device(batch[key], device, channels_last)
            xs = [v(x) for v in views]
            for m in ms:
                out[id(m)].append(mean_softmax(m.model, xs, device, dtype, TASKS[m.task].activation))
    per_member = [TASKS[m.task].to_predictions(torch.cat(out[id(m)]).numpy(), m.target) for m in members]
    ens = combine(per_member, how)
    return (ens, per_member) if return_members else ens


def load_single_image(spec: str, preparations: list, timeout: float = 10.0) -> dict:
    """{(grey, side): image} of a local file or an http(s) URL (fetched once when online; a clear
    error offline), prepared as training prepared its images (images.prepare_image)."""
    if spec.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(spec, timeout=timeout) as r:
                data = r.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise ImageError(f"cannot fetch {spec} ({reason}). Offline? Download the image and pass its path.") from None
        with tempfile.NamedTemporaryFile(suffix=Path(spec.split("?")[0]).suffix or ".img") as fh:
            fh.write(data)
            fh.flush()
            return {(g, side): prepare_image(fh.name, g, side) for g, side in preparations}
    return {(g, side): prepare_image(spec, g, side) for g, side in preparations}
