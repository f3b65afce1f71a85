"""The one Triton python-backend adapter every model_repo/<role>/1/model.py re-exports.

Triton calls `initialize` once per instance and `execute` with a list of requests; we map each request's
tensors to the model class named by the config, and send MediaError back as a TritonError whose message the
client turns into the same exception type (`MediaError.from_message`).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from jiwoom.api.errors import MediaError
from server.config import load_settings, with_model_overrides
from server.models import load_model

log = logging.getLogger("jiwoom.triton")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.name = config["name"]
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        # A config's `parameters` override model settings: that is how configs/gpu.pbtxt picks GPU providers.
        overrides = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        if args.get("model_instance_kind") == "GPU" and overrides.get("torch_device", "").startswith("cuda"):
            # Triton places each KIND_GPU instance on one device (instance_group gpus); follow it, not cuda:0
            overrides["torch_device"] = f"cuda:{args['model_instance_device_id']}"
        settings = with_model_overrides(load_settings(), overrides)
        # One line per instance in tritonserver's log: which runtime and device a config really selected.
        print(f"jiwoom: {args.get('model_instance_name', self.name)}: runtime {settings.models.runtime}, "
              f"torch_device {settings.models.torch_device}", file=sys.stderr, flush=True)
        self.model = load_model(self.name, settings)

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils  # exists only inside the Triton stub

        responses = []
        for request in requests:
            try:
                given = {n: pb_utils.get_input_tensor_by_name(request, n) for n in self.input_names}
                inputs = {n: t.as_numpy() for n, t in given.items() if t is not None}  # optional ones may be absent
                outputs = self.model(**inputs)
                tensors = [pb_utils.Tensor(n, outputs[n]) for n in self.output_names]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except MediaError as error:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(error.to_message())))
            except Exception as error:  # a model bug must fail this request, not the server
                log.exception("%s failed", self.name)
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {error}")))
        return responses
