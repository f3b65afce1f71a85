"""Triton python backend entry for `image_embed`: the shared adapter over server/models/image_embed.py."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
