"""Embedded Milvus (the `milvus` package: a real Milvus standalone server) for the tests and the benchmarks, on
ports of its own, so that several can run on one machine (a benchmark beside the test suite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.serve_process import free_port


def own_etcd_ports(base: Path) -> Any:
    """The `milvus` package's config with its embedded etcd on free ports: its template leaves etcd's peer port at
    2380, so a second Embedded Milvus on the machine fails to start while one runs."""
    import milvus
    from milvus import MilvusServerConfig

    data = Path(milvus.__file__).parent / "data"
    peer, client_port = free_port(), free_port()
    etcd = base / "etcd_embed.yaml"
    etcd.write_text(f"name: default\ndata-dir: {base}/data/etcd.data\n"
                    f"listen-peer-urls: http://127.0.0.1:{peer}\ninitial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
                    f"initial-cluster: default=http://127.0.0.1:{peer}\n"
                    f"listen-client-urls: http://127.0.0.1:{client_port}\n"
                    f"advertise-client-urls: http://127.0.0.1:{client_port}\n")
    text = (data / "config.yaml.template").read_text()
    text = text.replace("  use:\n    embed: true", f"  use:\n    embed: true\n  config:\n    path: {etcd}", 1)
    text = text.replace("{{ etcd_port(int): 2379 }}", str(client_port), 1)
    template = base / "config.yaml.template"
    template.write_text(text)
    config = MilvusServerConfig(template=str(template))
    config.glog_conf_file = str(data / "glog.conf")  # set only when the packaged template is used
    return config


def start_milvus(base: Path) -> Any:
    """A started Embedded Milvus keeping its data, logs and etcd under `base` (about 10 s); `.stop()` it. Its
    address: http://127.0.0.1:{server.listen_port}."""
    from milvus import MilvusServer

    base.mkdir(parents=True, exist_ok=True)
    server = MilvusServer(own_etcd_ports(base))
    server.show_startup_banner = False
    server.set_base_dir(str(base))
    server.start()
    return server
