"""Learned-feature embeddings of the competition's images, for the audit's copy search and its
adversarial validation: a timm backbone with ImageNet weights (a local file, or the hub's local
cache; never a download unless asked), global-pool features, cached on disk.

One image's embedding is ``normalize(f(x) + f(mirror(x)))`` with ``f`` the L2-normalised pooled
features: an image and its horizontal mirror get the same vector, so mirrored copies are found by
the same nearest-neighbour search as every other copy (searching with both views and keeping the
best would double the search; summing the two views costs two forward passes and nothing more:
the image and its mirror run as one batch). Images are resized whole (aspect not kept, nothing
cropped away) to ``size`` x ``size``; array layouts are embedded straight from the arrays, large
JPEGs decoded at reduced size. The backbone is the whole cost (benchmarks/RESULTS.md "Feature
search at 100,000 images"): on a CPU it runs through onnxruntime when installed, on a GPU with
bfloat16 (see Embedder).

The cache (``<audit dir>/embed_cache_<model>_<size>.npz``) is keyed like the hash cache
(``foldkit.data.copies.file_key``: path + size + mtime for files, the pixel hash for array layouts), and
records which weights made it: other weights start it again.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from foldkit.data.copies import file_key
from foldkit.data.images import decode_image
from foldkit.errors import FoldkitError
from foldkit.io import atomic_write_with

DEFAULT_MODEL = "mobilenetv2_100"
DEFAULT_SIZE = 96         # finds about as many planted copies as 128 px, faster: benchmarks/RESULTS.md
                          # "Feature search at 100,000 images"
MIN_SIZE = 32          # smaller inputs leave mobilenet-like backbones a 1x1 feature map or less
HUB = "hub"            # --embed-weights hub: download from the hub (needs a network)
NONE = "none"          # --embed-weights none: no feature search
BATCH = 128
SAVE_EVERY = 10000     # images embedded between cache saves

# A pair is called a copy when the cosine similarity of its two embeddings is >= threshold and it
# stands >= margin above both images' background similarity (their r-th nearest neighbour's,
# r = 1% of the images, 2..10; foldkit.audit.duplicates.feature_pairs), per (model, size). The margin
# and the recall floor CHECK_FROM were calibrated on planted copies of real photos against different
# images of the same class (benchmarks/bench_copies.py; benchmarks/RESULTS.md "Feature copies"; 64 and
# 96 px: "Feature search at 100,000 images"). On natural data many pairs just above that floor are
# look-alikes (different faces, products photographed alike), so the copy threshold sits higher, where a
# blind look at random pairs of natural look-alikes found mostly copies; pairs from CHECK_FROM up to it
# are listed "to check", never counted as leaks or label conflicts (benchmarks/RESULTS.md "Feature
# copies on natural look-alikes"; the expected precision per band: foldkit.audit.duplicates.BANDS).
CHECK_FROM = 0.80
CALIBRATED = {("mobilenetv2_100", 128): (0.90, 0.06), ("mobilenetv2_100", 96): (0.90, 0.06),
              ("mobilenetv2_100", 64): (0.90, 0.08)}


class EmbedError(FoldkitError, ValueError):
    """The embedding backbone cannot be built as asked; the message says what to do."""


def threshold_for(model: str, size: int, given: float = 0.0) -> tuple[float, float, bool]:
    """(cosine threshold of a copy, margin, calibrated?) for a model and input size; `given` > 0
    overrides the threshold. Uncalibrated models and sizes get the default model's values."""
    thr, margin = CALIBRATED.get((model, size), CALIBRATED[(DEFAULT_MODEL, DEFAULT_SIZE)])
    calibrated = (model, size) in CALIBRATED and (given <= 0 or given == thr)
    return (float(given) if given > 0 else thr), margin, calibrated


def check_from(threshold: float) -> float:
    """The lowest similarity listed "to check" below a copy threshold (none below a threshold under
    CHECK_FROM: the user asked for those pairs to be called copies)."""
    return min(CHECK_FROM, threshold)


def _hub_cached(model_name: str) -> str:
    """The hub weights file of a timm model when it is already on this machine, else ''
    (nothing is downloaded and the network is not asked)."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache  # lazy: comes with timm, imported with it
        cfg = timm.models.get_pretrained_cfg(model_name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
        for f in ("model.safetensors", "pytorch_model.bin") if hub_id else ():
            path = try_to_load_from_cache(hub_id, f)
            if isinstance(path, str):
                return path
    except Exception:  # noqa: BLE001 - any failure here means "not available offline"
        pass
    return ""


def weights_source(model_name: str, weights: str) -> tuple[str, str]:
    """(source, why-not): source is a weights file, 'hub' (download), or '' when no weights can be
    had offline (why-not then says what the user can do)."""
    if weights.lower() == NONE:
        return "", "feature search turned off (--embed-weights none)"
    if weights.lower() == HUB:
        return HUB, ""
    if weights:
        if not Path(weights).is_file():
            raise EmbedError(f"--embed-weights {weights}: no such file. Pass a timm state_dict of "
                             f"{model_name!r} (e.g. downloaded elsewhere), 'hub' to download, or 'none'.")
        return str(Path(weights).resolve()), ""
    cached = _hub_cached(model_name)
    if cached:
        return cached, ""
    return "", (f"no weights for {model_name!r} on this machine (pass --embed-weights FILE, or "
                "--embed-weights hub where a network exists)")


def check_model(model_name: str) -> None:
    """EmbedError unless timm knows the model (checked before any image is read)."""
    import timm
    if not timm.is_model(model_name):
        raise EmbedError(f"embedding backbone: unknown timm model {model_name!r}. See timm.list_models() for "
                         f"the names (default {DEFAULT_MODEL}, the calibrated one).")


def auto_device() -> str:
    """Where the embeddings run when nothing is asked: CUDA when present (in bfloat16), else the CPU."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_backbone(model_name: str, source: str, device: str = "auto"):
    """(model in eval mode on `device` (auto: CUDA when present, else CPU), device, mean, std) with
    pooled features as output."""
    import torch

    from foldkit.runtime.model import ModelError, create_model  # lazy: imports torch
    try:
        if source == HUB:
            model = create_model(model_name, num_classes=0, pretrained=True)
        else:
            model = create_model(model_name, num_classes=0, pretrained_file=source)
    except ModelError as e:
        raise EmbedError(f"embedding backbone: {e}") from None
    if device == "auto":
        device = auto_device()
    cfg = model.pretrained_cfg
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    return model.eval().to(device), torch.device(device), mean, std


def weights_id(source: str, model_name: str) -> str:
    """What made an embedding: the weights file's size + mtime (cheap), or the hub model name."""
    if source == HUB:
        return f"hub:{model_name}"
    st = os.stat(source)
    return f"{Path(source).resolve()}|{st.st_size}|{st.st_mtime_ns}"


def to_input(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 image (H, W[, C]) -> (size, size, 3) uint8, the whole image resized."""
    import cv2
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    interp = cv2.INTER_AREA if min(img.shape[:2]) > size else cv2.INTER_LINEAR
    img = cv2.resize(img, (size, size), interpolation=interp)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img


def cpu_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not Linux
        return os.cpu_count() or 1


def _mirror_embedding(model, mean, std):
    """A torch module: (N, H, W, 3) uint8 -> (N, dim) unit embeddings, normalize(f(x) + f(mirror x)),
    the image and its mirror run as one batch. The one definition the torch and onnxruntime paths run."""
    import torch

    class MirrorEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

        def forward(self, x):
            x = (x.permute(0, 3, 1, 2).float() - self.mean) / self.std
            n = x.shape[0]
            both = self.model(torch.cat([x, x.flip(3)]).contiguous(memory_format=torch.channels_last))
            both = torch.nn.functional.normalize(both.float(), dim=1)
            return torch.nn.functional.normalize(both[:n] + both[n:], dim=1)
    return MirrorEmbedding().eval()


def _onnx_session(module, size: int, threads: int):
    """An onnxruntime session of `module` (exported in memory, dynamic batch), or None when
    onnxruntime is not installed or the model does not export (the torch path runs then)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None

    import torch
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")     # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (torch.zeros(2, size, size, 3, dtype=torch.uint8),), buf,
                              input_names=["image"], output_names=["embedding"],
                              dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}}, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any export/runtime failure: the torch path gives the same numbers
        return None


class Embedder:
    """Mirror-invariant, L2-normalised embeddings of uint8 images (see the module doc).

    Where it runs: CUDA when present (bfloat16 autocast, channels_last); on a CPU, onnxruntime
    when installed (``pip install -e ".[onnx]"``: the same module exported to ONNX, faster than
    eager torch on a CPU, benchmarks/RESULTS.md "Feature search at 100,000 images"), else eager torch; on `threads` cores (0 = every core this process may use).
    `backend` forces "torch" or "onnxruntime"; `backend_name` says which runs."""

    def __init__(self, model_name: str, source: str, size: int, threads: int = 0, device: str = "auto",
                 backend: str = "auto"):
        model, self.device, mean, std = load_backbone(model_name, source, device)
        self.size = size
        self.dim = model.num_features
        self.threads = threads if threads > 0 else cpu_threads()
        self.module = _mirror_embedding(model, mean, std).to(self.device)
        self.session = None
        if self.device.type == "cpu" and backend in ("auto", "onnxruntime"):
            self.session = _onnx_session(self.module, size, self.threads)
            if self.session is None and backend == "onnxruntime":
                raise EmbedError("embedding with onnxruntime: not installed or the model does not export "
                                 "(pip install -e '.[onnx]')")
        self.backend_name = ("onnxruntime" if self.session is not None
                             else f"torch {self.device.type}" + (" bfloat16" if self.device.type == "cuda" else ""))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 -> (N, dim) float32, unit norm."""
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        if self.session is not None:
            return self.session.run(None, {"image": batch})[0].astype(np.float32)
        import torch
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16,
                                                        enabled=self.device.type == "cuda"):
                e = self.module(torch.from_numpy(batch).to(self.device, non_blocking=True))
            return e.float().cpu().numpy()
        finally:
            torch.set_num_threads(before)

    def embed(self, images, log=None) -> np.ndarray:
        """Embeddings of an iterable of uint8 images (any size), in order."""
        out, buf = [], []
        for img in images:
            buf.append(to_input(img, self.size))
            if len(buf) == BATCH:
                out.append(self(np.stack(buf)))
                buf = []
        if buf:
            out.append(self(np.stack(buf)))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class EmbeddingCache:
    """Embeddings on disk (float16), keyed like the hash cache; other weights start it again."""

    def __init__(self, path: str | Path | None, made_by: str):
        self.path = Path(path) if path else None
        self.made_by = made_by
        self.vectors: dict[str, np.ndarray] = {}
        self.dirty = False
        if self.path and self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    if str(z["made_by"]) == made_by:
                        self.vectors = dict(zip(z["key"].tolist(), z["emb"]))
            except (OSError, KeyError, ValueError):
                self.vectors = {}      # unreadable cache: start again

    def get(self, keys: list[str]) -> list[np.ndarray | None]:
        return [self.vectors.get(k) for k in keys]

    def put(self, keys: list[str], emb: np.ndarray) -> None:
        for k, e in zip(keys, emb):
            self.vectors[k] = e.astype(np.float16)
        self.dirty = self.dirty or len(keys) > 0

    def save(self) -> None:
        if not (self.path and self.dirty):
            return
        keys = np.array(list(self.vectors), dtype=str)
        emb = np.stack(list(self.vectors.values())).astype(np.float16)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:      # a file object: np.savez would append .npz to a name
                np.savez(fh, key=keys, emb=emb, made_by=np.array(self.made_by))
        atomic_write_with(self.path, write)
        self.dirty = False


def cache_name(model_name: str, size: int) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in model_name)
    return f"embed_cache_{safe}_{size}.npz"


def _decoded(comp, table, todo: list[int], size: int, pix=None):
    """The images of table rows `todo`: rows of `pix` (array layouts: no file, no decoding) or
    decoded files (large JPEGs at 1/2, 1/4 or 1/8 size, never below the embedding's `size`)."""
    if pix is not None:
        index = table["index"].to_numpy()
        for i in todo:
            yield pix[int(index[i])]
    else:
        paths = table["path"].to_numpy()
        for i in todo:
            yield decode_image(Path(comp.root) / paths[i], min_side=size)


def competition_embeddings(comp, hashes, cache_path, model_name: str, source: str, size: int,
                           log=print, threads: int = 0) -> np.ndarray:
    """(N, dim) float32 embeddings of the rows of `hashes` (duplicates.find_duplicates' table:
    train then test); rows with a read error get zeros. Cached; only new images are decoded.
    threads: CPU cores the backbone runs on (0 = all this process may use)."""
    # CUDA embeds in bfloat16 (Embedder): its vectors differ slightly from float32 ones, so the two are
    # never mixed in one cache (a borderline pair would flip between a GPU and a CPU run)
    precision = "|bf16" if auto_device() == "cuda" else ""
    cache = EmbeddingCache(cache_path, f"{weights_id(source, model_name)}|{size}{precision}")
    embedder = None
    parts = []
    for split in ("train", "test"):
        rows = hashes[hashes["split"] == split]
        if rows.empty:
            continue
        table = comp.train if split == "train" else comp.test
        pix = comp.pixels(split) if comp.source_col == "index" else None
        if pix is not None:
            keys = rows["exact"].astype(str).tolist()
        else:
            keys = [file_key(Path(comp.root) / p) for p in table["path"]]
        got = cache.get(keys)
        ok = (rows["error"].fillna("") == "").to_numpy()
        todo = [i for i, g in enumerate(got) if g is None and ok[i]]
        if todo:
            embedder = embedder or Embedder(model_name, source, size, threads)
            log(f"embedding {len(todo)} {split} image(s) with {model_name} at {size} px on {embedder.backend_name} "
                f"({len(got) - len(todo)} cached)")
        for start in range(0, len(todo), SAVE_EVERY):      # saved as it goes: an interrupted run resumes
            part = todo[start:start + SAVE_EVERY]
            fresh = embedder.embed(_decoded(comp, table, part, size, pix))
            cache.put([keys[i] for i in part], fresh)
            cache.save()
            for i, e in zip(part, fresh):
                got[i] = e.astype(np.float16)    # as the cache holds it: a cold and a cached run agree
            if len(todo) > SAVE_EVERY:
                log(f"  {min(len(todo), start + SAVE_EVERY)} of {len(todo)} {split} image(s) embedded")
        dim = next((g.shape[0] for g in got if g is not None), embedder.dim if embedder else 0)
        parts.append(np.stack([np.zeros(dim, np.float32) if g is None else g.astype(np.float32) for g in got]))
    cache.save()
    emb = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norm > 0, norm, 1)     # float16 storage: back to unit norm

