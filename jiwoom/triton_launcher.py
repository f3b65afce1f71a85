"""Run the ``tritonserver`` binary that ships inside nvidia-pytriton on one of our model repositories.

Used by the integration tests (``start_triton``) and by humans (``python -m jiwoom.triton_launcher
--model-repository model_repo``). Nothing under site-packages is modified: every run gets its own temporary
directory holding a copy of the bundled ``backends/`` with the python-backend stub for the running
interpreter's version dropped into ``backends/python/``.

What the bundled binary needs (found by running it, tritonserver 2.51 from nvidia-pytriton 0.7.0):

* The stub (``triton_python_backend_stub``) embeds CPython. It finds its ``sys.prefix`` by looking up
  ``python3`` on ``PATH``, so the virtualenv's ``bin`` must come first or neither numpy (which
  ``triton_python_backend_utils`` itself imports) nor anything else from the venv can be imported.
* The stub links ``libpython3.X.so.1.0`` by soname; without the interpreter's own LIBDIR on
  ``LD_LIBRARY_PATH`` it silently picks up whatever the system has (e.g. Debian's 3.11.2 lib against a
  pyenv 3.11.7 stdlib). Its RPATH is ``$ORIGIN/../../../../nvidia_pytriton.libs``, which no longer resolves
  once the stub is copied elsewhere, so ``nvidia_pytriton.libs`` must be on ``LD_LIBRARY_PATH`` as well
  (otherwise: ``libcudart-….so: cannot open shared object file`` and the model load hangs).
* The stub runs Python in isolated mode (``sys.flags.isolated == 1``): ``PYTHONPATH`` is in ``os.environ``
  but not on ``sys.path``, and nothing of ours is imported before a ``model.py``. So each run also gets a
  tiny virtualenv ("stub-python": ``bin/python3`` symlink, ``pyvenv.cfg``, one ``.pth`` file) put first on
  ``PATH``. The stub adopts it as its ``sys.prefix``; its ``.pth`` adds this environment's site-packages and
  puts ``PYTHONPATH``'s entries on ``sys.path`` at interpreter start, before any model is imported.
* Metrics are on by default and bind port 8002 on all interfaces, which collides between parallel servers;
  they are switched off here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import logging
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from server.inference.model_repo import DEFAULT_REPOSITORY

LOGGER = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
STUB_NAME = "triton_python_backend_stub"

# The last line of the stub-python's .pth file (.pth lines starting with "import" are executed by site):
# PYTHONPATH's entries go first, where the interpreter puts them without isolation.
_PTH_PYTHONPATH = (
    "import os, sys; sys.path[0:0] = [p for p in dict.fromkeys(os.environ.get('PYTHONPATH', '').split(os.pathsep))"
    " if p and p not in sys.path]"
)

# gRPC honours http(s)_proxy; readiness probes go to loopback and must never be proxied.
_PROBE_CHANNEL_ARGS = [("grpc.enable_http_proxy", 0)]

# Output after which the server never becomes ready but does not exit either (a stub that cannot start).
_FATAL_OUTPUT = (b"error while loading shared libraries",)
# Log lines worth quoting when startup fails: "E1121 19:08:01.394867 4332 server.cc:241] ..." (glog error
# level), "error: creating server: ...", and failures printed by the dynamic linker or by the stubs.
_HARMLESS = ("CudaDriverHelper has not been initialized", "unable to create stream for")  # no GPU: expected
_ERROR_LINE = re.compile(r"^(E\d{4} |error:|.*(error while loading|failed to load|Traceback|Error:))")


class TritonStartupError(RuntimeError):
    """tritonserver exited or did not become ready; the message quotes its log's errors and tail."""


@dataclass(frozen=True)
class TritonDistribution:
    """Where the pieces of the tritonserver bundled in nvidia-pytriton live."""

    root: Path  # .../site-packages/pytriton/tritonserver
    binary: Path  # root/bin/tritonserver
    backends_dir: Path  # root/backends (holds python/)
    stubs_dir: Path  # root/python_backend_stubs/<major.minor>/triton_python_backend_stub
    caches_dir: Path  # root/caches
    libs_dir: Path  # .../site-packages/nvidia_pytriton.libs

    def stub_for(self, python_version: str | None = None) -> Path:
        """The python-backend stub built for ``python_version`` ("3.11"; default: the running interpreter)."""
        version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.stubs_dir / version / STUB_NAME
        if not stub.is_file():
            available = sorted(p.name for p in self.stubs_dir.iterdir() if (p / STUB_NAME).is_file())
            raise RuntimeError(f"no python backend stub for Python {version} in {self.stubs_dir} (has {available})")
        return stub


def locate_tritonserver() -> TritonDistribution:
    """Find the tritonserver bundled with the installed nvidia-pytriton package (without importing it)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed in this environment (no 'pytriton' package)")
    package_dir = Path(next(iter(spec.submodule_search_locations))).resolve()
    root = package_dir / "tritonserver"
    dist = TritonDistribution(
        root=root,
        binary=root / "bin" / "tritonserver",
        backends_dir=root / "backends",
        stubs_dir=root / "python_backend_stubs",
        caches_dir=root / "caches",
        libs_dir=package_dir.parent / "nvidia_pytriton.libs",
    )
    for required in (dist.binary, dist.backends_dir / "python", dist.stubs_dir, dist.libs_dir):
        if not required.exists():
            raise RuntimeError(f"nvidia-pytriton at {package_dir} has no {required}; is it an editable install?")
    return dist


@functools.cache
def _supported_flags(binary: Path) -> frozenset[str]:
    """The long options ``tritonserver --help`` lists (it prints usage and exits 1)."""
    proc = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL
    )
    words = (proc.stdout + proc.stderr).split()
    return frozenset(w for w in words if w.startswith("--"))


def prepare_backend_directory(run_dir: Path, dist: TritonDistribution, python_version: str | None = None) -> Path:
    """Copy the bundled ``backends/`` into ``run_dir`` and put the stub for this interpreter in ``python/``."""
    backends = run_dir / "backends"
    shutil.copytree(dist.backends_dir, backends, ignore=shutil.ignore_patterns("__pycache__"))
    python_backend = backends / "python"
    stub = python_backend / STUB_NAME
    shutil.copy2(dist.stub_for(python_version), stub)
    stub.chmod(0o755)
    return backends


def prepare_stub_python(run_dir: Path) -> Path:
    """A minimal virtualenv over this interpreter for the python stubs (see the module docstring).

    Returns its ``bin`` directory, which must come first on ``PATH``.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    # The venv's bin/python3 is a symlink to the base interpreter; so is ours.
    interpreter = Path(os.path.realpath(sys.executable))
    venv = run_dir / "stub-python"
    bin_dir = venv / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python3", f"python{version}", "python"):
        (bin_dir / name).symlink_to(interpreter)
    (venv / "pyvenv.cfg").write_text(
        f"home = {interpreter.parent}\ninclude-system-site-packages = false\nversion = {sys.version.split()[0]}\n",
        encoding="utf-8",
    )
    site_packages = venv / "lib" / f"python{version}" / "site-packages"
    site_packages.mkdir(parents=True)
    # addsitedir (not a plain path line) so that this environment's own .pth files are processed too.
    lines = [f"import site; site.addsitedir({d!r})" for d in site.getsitepackages() if Path(d).is_dir()]
    (site_packages / "triton_launcher.pth").write_text("\n".join([*lines, _PTH_PYTHONPATH]) + "\n", encoding="utf-8")
    return bin_dir


def _prepend(entries: Sequence[str], existing: str | None) -> str:
    parts = [e for e in entries if e]
    parts += [e for e in (existing or "").split(os.pathsep) if e and e not in parts]
    return os.pathsep.join(parts)


def server_environment(
    dist: TritonDistribution,
    stub_python_bin: Path,
    extra_pythonpath: Sequence[Path | str] = (),
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """os.environ plus what the binary and its python stubs need (see the module docstring); ``env`` wins."""
    result = dict(os.environ)
    # Not resolved: the venv's bin/python3 is a symlink to the base interpreter.
    venv_bin = Path(sys.executable).parent
    result["PATH"] = _prepend([str(stub_python_bin), str(venv_bin)], result.get("PATH"))

    lib_dirs: list[str] = []
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlibrary = sysconfig.get_config_var("LDLIBRARY")
    if libdir and Path(libdir).is_dir():
        lib_dirs.append(str(libdir))
        if ldlibrary and not (Path(libdir) / str(ldlibrary)).exists():
            LOGGER.warning("%s has no %s; the stub will load the system's libpython", libdir, ldlibrary)
    lib_dirs.append(str(dist.libs_dir))
    result["LD_LIBRARY_PATH"] = _prepend(lib_dirs, result.get("LD_LIBRARY_PATH"))

    result["PYTHONPATH"] = _prepend([str(Path(p).resolve()) for p in extra_pythonpath], result.get("PYTHONPATH"))
    result.update(env or {})
    return result


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on loopback (all sockets held open together so the ports differ)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid`` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may itself contain spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _tail(path: Path, max_lines: int = 60) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-max_lines:])


def _failure_report(path: Path, max_errors: int = 20, max_tail: int = 25) -> str:
    """The log's error lines (E-level, "error:") and its tail, without the ASCII status tables."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    errors = [line for line in lines if _ERROR_LINE.match(line) and not any(h in line for h in _HARMLESS)]
    tail = [line for line in lines if line.strip() and not line.startswith(("|", "+"))][-max_tail:]
    return "errors:\n" + "\n".join(errors[-max_errors:]) + "\n--- log tail:\n" + "\n".join(tail)


@dataclass
class TritonServer:
    """A running tritonserver started by :func:`start_triton` (leader of its own process group)."""

    process: subprocess.Popen[bytes] = field(repr=False)
    grpc_port: int
    http_port: int
    log_path: Path
    model_repository: Path
    backend_directory: Path
    command: list[str] = field(repr=False)
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def pgid(self) -> int:
        """Process group of the server and its python stubs (== pid: started with start_new_session)."""
        return self.process.pid

    @property
    def grpc_url(self) -> str:
        """``host:port`` as tritonclient.grpc.InferenceServerClient expects it."""
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``host:port`` as tritonclient.http.InferenceServerClient expects it (no scheme)."""
        return f"{LOOPBACK}:{self.http_port}"

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, max_lines: int = 60) -> str:
        return _tail(self.log_path, max_lines)

    def grpc_client(self, **kwargs: Any) -> grpcclient.InferenceServerClient:
        """A new gRPC client for this server (the caller closes it)."""
        return grpcclient.InferenceServerClient(self.grpc_url, **kwargs)


def _ready(url: str) -> bool:
    """Server ready and every model in the repository index ready (one fresh channel per probe)."""
    client = grpcclient.InferenceServerClient(url, channel_args=_PROBE_CHANNEL_ARGS)
    try:
        if not client.is_server_ready(client_timeout=2.0):
            return False
        index = client.get_model_repository_index(as_json=True, client_timeout=2.0)
        names = {str(m["name"]) for m in index.get("models", [])}
        return all(client.is_model_ready(name, client_timeout=2.0) for name in sorted(names))
    except InferenceServerException:
        return False
    finally:
        client.close()


def _wait_until_ready(server: TritonServer, timeout_s: float) -> None:
    start = time.monotonic()
    deadline = start + timeout_s
    scanned = 0  # bytes of the log already searched for _FATAL_OUTPUT
    while True:
        returncode = server.process.poll()
        if returncode is not None:
            raise TritonStartupError(
                f"tritonserver exited with code {returncode} during startup "
                f"(log {server.log_path}):\n{_failure_report(server.log_path)}"
            )
        # A stub that cannot even start (missing shared library) leaves the server waiting for ever.
        with server.log_path.open("rb") as log:
            log.seek(max(0, scanned - 200))
            new = log.read()
            scanned = log.tell()
        if any(pattern in new for pattern in _FATAL_OUTPUT):
            raise TritonStartupError(
                f"a tritonserver python stub could not start (log {server.log_path}):\n"
                f"{_failure_report(server.log_path)}"
            )
        # The gRPC endpoint only starts listening after every model has loaded.
        if _port_accepts(server.grpc_port) and _ready(server.grpc_url):
            server.startup_s = time.monotonic() - start
            return
        if time.monotonic() >= deadline:
            raise TritonStartupError(
                f"tritonserver (pid {server.pid}) not ready after {timeout_s:.0f}s "
                f"(log {server.log_path}):\n{_failure_report(server.log_path)}"
            )
        time.sleep(0.1)


def _exited_without_reaping(pid: int, timeout_s: float) -> bool:
    """Wait for ``pid`` to exit but leave it a zombie, so its pid (== our pgid) cannot be reused yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # already reaped (Popen.poll saw it exit)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the server's process group, wait up to ``grace_s``, then SIGKILL whatever is left of it."""
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    if not _exited_without_reaping(process.pid, grace_s):
        LOGGER.warning("tritonserver (pid %d) ignored SIGTERM for %.0fs; killing its process group", pgid, grace_s)
    # Always sweep the group: python stubs whose server died hard are not stopped by anyone else.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10.0
    while (left := process_group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        LOGGER.warning("processes %s of tritonserver's group %d survived SIGKILL", left, pgid)


def _build_command(
    dist: TritonDistribution,
    model_repository: Path,
    backends: Path,
    grpc_port: int,
    http_port: int,
    extra_args: Sequence[str],
) -> list[str]:
    command = [
        str(dist.binary),
        "--model-repository", str(model_repository),
        "--backend-directory", str(backends),
        "--grpc-port", str(grpc_port),
        "--http-port", str(http_port),
        "--allow-metrics=false",  # else it binds 0.0.0.0:8002, which collides between servers
        "--exit-on-error=true",
        "--strict-readiness=true",
        "--exit-timeout-secs=5",
    ]  # fmt: skip
    flags = _supported_flags(dist.binary)
    if "--grpc-address" in flags:
        command += ["--grpc-address", LOOPBACK]
    if "--http-address" in flags:
        command += ["--http-address", LOOPBACK]
    if "--cache-directory" in flags and dist.caches_dir.is_dir():
        command += ["--cache-directory", str(dist.caches_dir)]
    return [*command, *extra_args]


@contextlib.contextmanager
def start_triton(
    model_repository: Path,
    *,
    grpc_port: int | None = None,
    http_port: int | None = None,
    extra_pythonpath: Sequence[Path | str] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 120,
    log_path: Path | None = None,
    extra_args: Sequence[str] = (),
    shutdown_grace_s: float = 15.0,
) -> Iterator[TritonServer]:
    """Start the bundled tritonserver on ``model_repository``; yield it once it and all its models are ready.

    Ports left as None are picked free on 127.0.0.1 (retried if another process grabs one first).
    ``extra_pythonpath`` is importable from every model.py. The server's stdout and stderr (python stubs'
    prints included) go to ``log_path`` (overwritten), default a file in the run's temporary directory.
    Raises :class:`TritonStartupError` (a RuntimeError, with the log's tail) if the server exits or is not
    ready within ``startup_timeout_s``. On exit the whole process group is stopped: SIGTERM, then SIGKILL.
    """
    dist = locate_tritonserver()
    repository = Path(model_repository).resolve()
    if not repository.is_dir():
        raise FileNotFoundError(f"model repository {repository} is not a directory")
    auto_ports = grpc_port is None and http_port is None
    attempts = 3 if auto_ports else 1

    with tempfile.TemporaryDirectory(prefix="triton-run-") as tmp:
        run_dir = Path(tmp)
        backends = prepare_backend_directory(run_dir, dist)
        server_env = server_environment(dist, prepare_stub_python(run_dir), extra_pythonpath, env)
        log = Path(log_path).resolve() if log_path is not None else run_dir / "tritonserver.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            free = iter(_free_ports(2))
            chosen_grpc = grpc_port if grpc_port is not None else next(free)
            chosen_http = http_port if http_port is not None else next(free)
            if chosen_http == chosen_grpc:
                chosen_http = next(free)
            command = _build_command(dist, repository, backends, chosen_grpc, chosen_http, extra_args)
            LOGGER.info("starting %s", " ".join(command))
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=server_env,
                    cwd=run_dir,  # the stub has "" on sys.path: keep the caller's cwd off it
                    start_new_session=True,
                )
            server = TritonServer(
                process=process,
                grpc_port=chosen_grpc,
                http_port=chosen_http,
                log_path=log,
                model_repository=repository,
                backend_directory=backends,
                command=command,
            )
            try:
                _wait_until_ready(server, startup_timeout_s)
            except TritonStartupError:
                stop_process_group(process, shutdown_grace_s)
                if attempt < attempts and "already in use" in server.log_tail(20):
                    LOGGER.warning("port taken while tritonserver started; retrying with new ports")
                    continue
                raise
            except BaseException:
                stop_process_group(process, shutdown_grace_s)
                raise
            break
        LOGGER.info("tritonserver pid %d ready in %.1fs at grpc %s", server.pid, server.startup_s, server.grpc_url)
        try:
            yield server
        finally:
            stop_process_group(server.process, shutdown_grace_s)


def _follow(log: IO[str], process: subprocess.Popen[bytes], out: IO[str]) -> int:
    """Copy what gets appended to the open ``log`` to ``out`` until ``process`` exits; returns its exit code."""
    while True:
        chunk = log.read()
        if chunk:
            out.write(chunk)
            out.flush()
        returncode = process.poll()
        if returncode is not None:
            out.write(log.read())
            return returncode
        time.sleep(0.2)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jiwoom.triton_launcher",
        description="Run the tritonserver bundled in nvidia-pytriton on a model repository until Ctrl-C.",
    )
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port (default 8001)")
    parser.add_argument("--http-port", type=int, default=8000, help="0 picks a free port (default 8000)")
    parser.add_argument(
        "--pythonpath",
        type=Path,
        action="append",
        default=None,
        help=f"importable from every model.py; repeatable (default {REPO_ROOT})",
    )
    parser.add_argument("--log-path", type=Path, default=None, help="also keep the server log in this file")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("extra_args", nargs="*", help="passed on to tritonserver (after --)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # A plain SIGTERM would kill us without the cleanup below and leave the server running.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with start_triton(
            args.model_repository,
            grpc_port=args.grpc_port or None,
            http_port=args.http_port or None,
            extra_pythonpath=args.pythonpath or [REPO_ROOT],
            startup_timeout_s=args.startup_timeout,
            log_path=args.log_path,
            extra_args=args.extra_args,
        ) as server:
            with server.log_path.open("r", encoding="utf-8", errors="replace") as log:
                sys.stdout.write(log.read())
                print(
                    f"\ntritonserver ready in {server.startup_s:.1f}s: grpc {server.grpc_url}, "
                    f"http http://{server.http_url}, pid {server.pid}, log {server.log_path}. Ctrl-C stops it.",
                    flush=True,
                )
                returncode = _follow(log, server.process, sys.stdout)
            print(f"tritonserver exited with code {returncode}", file=sys.stderr)
            return returncode or 1
    except TritonStartupError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped tritonserver", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
