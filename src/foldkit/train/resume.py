"""Where a fold's training stands (`FoldState`): with the Training's state (foldkit.train.training) it is the
resume checkpoint fold{k}_last.pt; `save` and `load` are each other's mirror, `read` opens the file once
(an unreadable file: one ModelError line from foldkit.runtime.model.load_checkpoint)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from foldkit.runtime.model import load_checkpoint, save_checkpoint
from foldkit.train.checks import TrainError


@dataclass
class FoldState:
    """Where a fold's training stands; with the Training's state it is the resume checkpoint
    fold{k}_last.pt (save and load are each other's mirror)."""
    epochs_done: int = 0
    steps: int = 0
    best: float | None = None
    best_epoch: int = 0          # 1-based, like the log's epoch column; 0 = none yet
    bad_epochs: int = 0
    log: list = field(default_factory=list)
    world_size: int = 1          # processes of a torchrun run (exact resume needs the same number)
    teaching: dict = field(default_factory=dict)   # the fold's teacher record (foldkit.train.teacher): resume needs the same
    aug_device: str = "cpu"      # where the augmentation ran (--aug-device resolved): a resumed fold keeps it

    def save(self, path, tr) -> None:
        cpu = lambda sd: {k: v.cpu() for k, v in sd.items()}  # noqa: E731
        save_checkpoint({"state": asdict(self), "model": cpu(tr.model.state_dict()),
                         "optimizer": tr.optimizer.state_dict(), "scheduler": tr.scheduler.state_dict(),
                         "scaler": tr.scaler.state_dict() if tr.scaler else {},
                         "ema": cpu(tr.ema.module.state_dict()) if tr.ema else {}}, path)

    @staticmethod
    def read(path) -> dict:
        """The resume file's contents (read once per resumed fold; `load` puts them in place)."""
        st = load_checkpoint(path)
        if "state" not in st:
            raise TrainError(f"{path} is a resume file of an older foldkit version: delete it to restart "
                             "this fold, or pass --no-resume")
        return st

    @classmethod
    def load(cls, st: dict, tr) -> "FoldState":
        """The state of `read`'s contents, with the model, optimizer, schedule, scaler and EMA restored."""
        tr.model.load_state_dict(st["model"])
        tr.optimizer.load_state_dict(st["optimizer"])
        tr.scheduler.load_state_dict(st["scheduler"])
        if tr.scaler is not None and st["scaler"]:
            tr.scaler.load_state_dict(st["scaler"])
        if tr.ema is not None and st["ema"]:
            tr.ema.module.load_state_dict(st["ema"])
        return cls(**st["state"])
