"""The one way a setting names a PyTorch device (the ported models, the exact index)."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """"auto" is CUDA when torch sees it, else CPU; "cuda" (or "cuda:N") must exist: ValueError otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown torch device {device!r}") from err
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return resolved
