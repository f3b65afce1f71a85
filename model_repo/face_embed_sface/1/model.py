"""Triton python backend entry for `face_embed_sface`: the shared adapter over SFaceEmbedModel."""

from server.inference.triton_python import TritonPythonModel

__all__ = ["TritonPythonModel"]
