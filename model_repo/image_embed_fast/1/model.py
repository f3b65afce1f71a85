"""Triton python backend entry for `image_embed_fast`: the shared adapter over FastImageEmbedModel."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
