"""The device and precision a run uses, and moving a batch there: the one reading of --device, --amp and
--channels-last for training, prediction, export and the audit alike.

    pick_device        --device -> torch.device (checked against this machine)
    amp_dtype          --amp -> the autocast dtype (bf16 where supported, fp16, or none)
    autocast           the autocast context of that dtype (a no-op without one)
    use_channels_last  --channels-last -> whether batches go channels_last
    to_device          a batch on the device, in that memory format
    mean_softmax       a model's activated outputs averaged over input views (TTA)
    set_deterministic  --deterministic -> torch's deterministic algorithms, cuDNN and cuBLAS settings

torch is imported where used: importing this module keeps `--help` instant.
"""
from __future__ import annotations

import contextlib
import os

from foldkit.errors import ConfigError
from foldkit.tasks import ACTIVATIONS


def pick_device(name: str = "auto") -> "torch.device":
    """The torch device of --device; ConfigError for a name torch does not know or a device this
    machine lacks (checked here, not at the first tensor moved there)."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type, None) if device.type != "mps" else torch.backends.mps
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        raise ConfigError(f"--device {name}: this machine has no {device.type} device; use --device auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ConfigError(f"--device {name}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}")
    return device


def amp_dtype(device: "torch.device", amp: str) -> "torch.dtype | None":
    """bf16 where the GPU supports it, else fp16; off on CPU unless asked (CPU bf16 is slow on most CPUs)."""
    import torch
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def autocast(device: "torch.device", dtype: "torch.dtype | None"):
    import torch
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(setting: str, device: "torch.device") -> bool:
    """--channels-last: on, off, or auto (on for CUDA). The one reading of the setting."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def to_device(x: "torch.Tensor", device: "torch.device", channels_last: bool) -> "torch.Tensor":
    import torch
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def mean_softmax(model, views: list, device, dtype=None, activation: str = "softmax") -> "torch.Tensor":
    """Softmax probabilities of `model` (sigmoid for multi-label, raw outputs for regression: the task's
    activation), averaged over input views (TTA), in float32 on the CPU."""
    import torch
    p, act = 0, ACTIVATIONS[activation].torch
    with torch.no_grad(), autocast(device, dtype):
        for x in views:
            p = p + act(model(x).float())
    return (p / len(views)).cpu()


def set_deterministic(on: bool) -> None:
    """--deterministic: GPU kernels that give the same result every run (PyTorch's reproducibility notes),
    so a resumed run ends exactly as an uninterrupted one on a GPU too. On: torch's deterministic algorithms
    (warn_only: an operation without a deterministic kernel warns, naming itself, instead of stopping the
    run), cuDNN deterministic without its autotuner, and cuBLAS's fixed workspace (CUBLAS_WORKSPACE_CONFIG,
    read when cuBLAS starts: this runs before the first CUDA work of a process; a value the user set is
    kept). Off: torch's defaults. CPU kernels are deterministic either way."""
    import torch
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=on)
    torch.backends.cudnn.deterministic = on
    if on:
        torch.backends.cudnn.benchmark = False
