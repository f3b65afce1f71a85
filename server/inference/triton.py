"""Inference on a Triton Inference Server over gRPC (tritonclient)."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from jiwoom.api.client import channel_options
from jiwoom.api.errors import InferenceUnavailable, MediaError
from server.inference import Inference
from server.inference.model_repo import load_repository

# Video frames as raw tensors are large: lift gRPC's 4 MiB default on both directions.
MAX_MESSAGE_BYTES = 1024 * 1024 * 1024
CHANNEL_ARGS = channel_options(MAX_MESSAGE_BYTES)


class TritonInference(Inference):
    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.specs = load_repository()  # for the wire types; the server has the same files
        self.client = grpcclient.InferenceServerClient(url, channel_args=CHANNEL_ARGS)

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        spec = self.specs[model]
        spec.check_inputs(inputs)  # a shape error is the caller's, not the server's: same InvalidInput as in-process
        request_inputs = []
        for name, array in inputs.items():
            wire = grpcclient.InferInput(name, list(array.shape), spec.inputs[name].wire_type)
            wire.set_data_from_numpy(array)
            request_inputs.append(wire)
        requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
        try:
            result = self.client.infer(model, request_inputs, outputs=requested, client_timeout=self.timeout_s)
        except InferenceServerException as error:
            message = error.message() or str(error)
            typed = MediaError.from_message(message)
            if typed is not None:
                raise typed from None
            raise InferenceUnavailable(f"Triton at {self.url}: {message}") from error
        return {name: result.as_numpy(name) for name in outputs}

    def close(self) -> None:
        self.client.close()
