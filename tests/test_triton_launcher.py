"""jiwoom.triton_launcher against the real tritonserver bundled in nvidia-pytriton.

Each test builds a tiny python-backend model repository in tmp_path: ``add_one`` (FP32 [-1] -> +1),
``byte_len`` (BYTES [1] -> its length as INT64, and as FP32 for chaining) and two ensembles over them.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from jiwoom.triton_launcher import REPO_ROOT, TritonServer, process_group_members, start_triton

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(
        sys.platform != "linux" or importlib.util.find_spec("pytriton") is None,
        reason="needs Linux and nvidia-pytriton (which bundles tritonserver)",
    ),
]

STUB_COMM = "triton_python_backend_stub"[:15]  # /proc/PID/comm keeps 15 characters

ADD_ONE_CONFIG = """
name: "add_one"
backend: "python"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

# Imports from extra_pythonpath come first on purpose: the stub imports nothing of ours before model.py.
ADD_ONE_MODEL = """
import server  # noqa: F401  (the repo's own package: importable only through extra_pythonpath)

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x + 1).astype(np.float32))]))
        return responses
"""

BYTE_LEN_CONFIG = """
name: "byte_len"
backend: "python"
max_batch_size: 0
input [ { name: "DATA", data_type: TYPE_STRING, dims: [ 1 ] } ]
output [
  { name: "LEN", data_type: TYPE_INT64, dims: [ 1 ] },
  { name: "LEN_F", data_type: TYPE_FP32, dims: [ 1 ] }
]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

BYTE_LEN_MODEL = """
from launcher_test_helpers import byte_length  # from a tmp dir passed as extra_pythonpath

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            blob = pb_utils.get_input_tensor_by_name(request, "DATA").as_numpy().reshape(-1)[0]
            if blob.startswith(b"CORRUPT"):
                error = pb_utils.TritonError("[CorruptMedia] bad bytes")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            if blob.startswith(b"RAISE"):
                raise ValueError("[Unexpected] raised from execute")
            n = byte_length(blob)
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("LEN", np.array([n], dtype=np.int64)),
                        pb_utils.Tensor("LEN_F", np.array([n], dtype=np.float32)),
                    ]
                )
            )
        return responses
"""

HELPERS_MODULE = """
def byte_length(blob: bytes) -> int:
    assert isinstance(blob, bytes), type(blob)
    return len(blob)
"""

ADD_TWO_CONFIG = """
name: "add_two"
platform: "ensemble"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ -1 ] } ]
ensemble_scheduling {
  step [
    {
      model_name: "add_one", model_version: -1
      input_map { key: "X", value: "X" }, output_map { key: "Y", value: "once" }
    },
    {
      model_name: "add_one", model_version: -1
      input_map { key: "X", value: "once" }, output_map { key: "Y", value: "Y" }
    }
  ]
}
"""

MEASURE_CONFIG = """
name: "measure"
platform: "ensemble"
max_batch_size: 0
input [ { name: "DATA", data_type: TYPE_STRING, dims: [ 1 ] } ]
output [
  { name: "LEN", data_type: TYPE_INT64, dims: [ 1 ] },
  { name: "LEN_PLUS_ONE", data_type: TYPE_FP32, dims: [ 1 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "byte_len"
      model_version: -1
      input_map { key: "DATA", value: "DATA" }
      output_map [ { key: "LEN", value: "LEN" }, { key: "LEN_F", value: "len_f" } ]
    },
    {
      model_name: "add_one"
      model_version: -1
      input_map { key: "X", value: "len_f" }
      output_map { key: "Y", value: "LEN_PLUS_ONE" }
    }
  ]
}
"""

BROKEN_CONFIG = """
name: "broken"
backend: "python"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("broken on purpose: initialize failed")

    def execute(self, requests):
        return []
"""


def _write_model(repository: Path, name: str, config: str, model_py: str | None) -> None:
    version = repository / name / "1"
    version.mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(textwrap.dedent(config).lstrip())
    if model_py is None:
        (version / ".keep").write_text("")  # ensembles still need a version directory
    else:
        (version / "model.py").write_text(textwrap.dedent(model_py).lstrip())


def build_repository(root: Path) -> tuple[Path, Path]:
    """The test repository and the directory holding ``launcher_test_helpers`` (for extra_pythonpath)."""
    repository = root / "repo"
    _write_model(repository, "add_one", ADD_ONE_CONFIG, ADD_ONE_MODEL)
    _write_model(repository, "byte_len", BYTE_LEN_CONFIG, BYTE_LEN_MODEL)
    _write_model(repository, "add_two", ADD_TWO_CONFIG, None)
    _write_model(repository, "measure", MEASURE_CONFIG, None)
    helpers = root / "pylib"
    helpers.mkdir()
    (helpers / "launcher_test_helpers.py").write_text(textwrap.dedent(HELPERS_MODULE).lstrip())
    return repository, helpers


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _live_processes_mentioning(text: str) -> list[int]:
    """Non-zombie processes whose command line contains ``text`` (server and stubs name the repository)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repository, helpers = build_repository(tmp_path_factory.mktemp("triton"))
    with start_triton(repository, extra_pythonpath=[helpers, REPO_ROOT], startup_timeout_s=120) as server:
        yield server


@pytest.fixture
def client(triton: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(triton.grpc_url)
    yield c
    c.close()


def _bytes_input(blob: bytes) -> grpcclient.InferInput:
    data = grpcclient.InferInput("DATA", [1], "BYTES")
    data.set_data_from_numpy(np.array([blob], dtype=np.object_))
    return data


def test_server_ready_and_models_listed(triton: TritonServer, client: grpcclient.InferenceServerClient) -> None:
    assert triton.grpc_url == f"127.0.0.1:{triton.grpc_port}"
    assert triton.is_alive()
    assert client.is_server_ready()
    index = client.get_model_repository_index(as_json=True)
    assert {m["name"] for m in index["models"]} == {"add_one", "byte_len", "add_two", "measure"}
    assert all(client.is_model_ready(name) for name in ("add_one", "byte_len", "add_two", "measure"))


def test_add_one(client: grpcclient.InferenceServerClient) -> None:
    x = np.array([0.0, 1.5, -3.0, 41.0], dtype=np.float32)
    inp = grpcclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("add_one", [inp], outputs=[grpcclient.InferRequestedOutput("Y")])
    np.testing.assert_array_equal(result.as_numpy("Y"), x + 1)


@pytest.mark.parametrize(
    "blob",
    [b"hello", b"", b"\x00\xff\xfe binary \x00", b"ends with NUL\x00\x00", bytes(range(256)) * 40_000],
    ids=["ascii", "empty", "binary", "trailing-nul", "10MB"],
)
def test_bytes_input_length(client: grpcclient.InferenceServerClient, blob: bytes) -> None:
    result = client.infer("byte_len", [_bytes_input(blob)])
    length = result.as_numpy("LEN")
    assert length.dtype == np.int64
    assert length.tolist() == [len(blob)]


def test_ensemble_of_two_python_steps(client: grpcclient.InferenceServerClient) -> None:
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    inp = grpcclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("add_two", [inp]).as_numpy("Y"), x + 2)


def test_ensemble_bytes_into_python_steps(client: grpcclient.InferenceServerClient) -> None:
    result = client.infer("measure", [_bytes_input(b"twelve bytes")])
    assert result.as_numpy("LEN").tolist() == [12]
    assert result.as_numpy("LEN_PLUS_ONE").tolist() == [13.0]


@pytest.mark.parametrize("model", ["byte_len", "measure"])
def test_triton_error_reaches_client(client: grpcclient.InferenceServerClient, model: str) -> None:
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer(model, [_bytes_input(b"CORRUPT \xff\xd8")])
    assert "[CorruptMedia] bad bytes" in excinfo.value.message()
    assert "[CorruptMedia] bad bytes" in str(excinfo.value)
    # The model instance survives a per-request error.
    assert client.infer(model, [_bytes_input(b"ok")]).as_numpy("LEN").tolist() == [2]


def test_exception_raised_in_execute_reaches_client(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("byte_len", [_bytes_input(b"RAISE please")])
    assert "[Unexpected] raised from execute" in excinfo.value.message()
    assert client.infer("byte_len", [_bytes_input(b"ok")]).as_numpy("LEN").tolist() == [2]


def test_process_group_is_gone_after_exit(tmp_path: Path) -> None:
    repository, helpers = build_repository(tmp_path)
    with start_triton(repository, extra_pythonpath=[helpers, REPO_ROOT]) as server:
        pgid = server.pgid
        members = process_group_members(pgid)
        assert server.pid in members
        stubs = [pid for pid in members if _comm(pid) == STUB_COMM]
        assert len(stubs) == 2  # one per python model instance; ensembles run in the server
        assert sorted(_live_processes_mentioning(str(repository))) == sorted(members)
    assert not server.is_alive()
    assert process_group_members(pgid) == []
    assert _live_processes_mentioning(str(repository)) == []


def test_startup_failure_raises_with_log_tail(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    _write_model(repository, "broken", BROKEN_CONFIG, BROKEN_MODEL)
    log_path = tmp_path / "logs" / "tritonserver.log"
    start = time.monotonic()
    with (
        pytest.raises(RuntimeError, match="broken on purpose: initialize failed"),
        start_triton(repository, log_path=log_path, startup_timeout_s=60),
    ):
        pytest.fail("start_triton yielded for a repository whose model cannot load")
    assert time.monotonic() - start < 60  # --exit-on-error: it fails fast instead of timing out
    assert "failed to load" in log_path.read_text()
    assert _live_processes_mentioning(str(repository)) == []
