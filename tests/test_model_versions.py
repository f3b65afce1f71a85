"""Model versions: a reference made with one embedding model still matches after the service's default becomes
another (both are searched), and a service whose model changed under a stored signal refuses to start."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench import transforms
from server.config import MatchSettings, ModelSettings, Settings
from server.inference import Inference
from server.service import MatchingService
from server.service.versions import ModelMismatch
from server.storage.db import migrate, open_pool
from server.storage.store import Principal, Store
from tests.conftest import ASTRONAUT, fresh_database

OFFICER = Principal("versions-test", "admin")
MODEL_A = Settings(match=MatchSettings(signals="pdq,embedding,face"))  # the full SSCD only, as before the cascade
MODEL_B = Settings(match=MatchSettings(signals="pdq,embedding_fast,face", calibrated=False))  # the distilled one


@contextmanager
def service(settings: Settings, inference: Inference, url: str, snapshots: Path) -> Iterator[MatchingService]:
    with open_pool(url, max_size=4) as pool:
        matcher = MatchingService(settings, inference, Store(pool, settings.models), snapshots)
        matcher.start()
        try:
            yield matcher
        finally:
            matcher.stop()


def stored_signals(url: str) -> dict[int, dict[str, str]]:
    with open_pool(url, max_size=1) as pool, pool.connection() as conn:
        rows = conn.execute("select reference_id, signal, model from reference_vectors").fetchall()
    out: dict[int, dict[str, str]] = {}
    for reference_id, signal, model in rows:
        out.setdefault(reference_id, {})[signal] = model
    return out


def cropped_copy(corpus: Path, name: str) -> bytes:
    """A crop: PDQ is blind to it, so only an embedding can find it."""
    image = transforms.load(corpus / "images" / name)
    return transforms.encode(transforms.crop(image, keep=0.7), "JPEG", 85)


def test_a_reference_of_model_a_still_matches_when_b_is_the_default(
        postgres_server: str, inference: Inference, corpus: Path, tmp_path: Path) -> None:
    reference = (corpus / "images" / ASTRONAUT).read_bytes()
    with fresh_database(postgres_server) as url:
        migrate(url)
        with service(MODEL_A, inference, url, tmp_path) as matcher:
            old_id = matcher.register_reference(OFFICER, "case-a", reference).reference_id
        old = stored_signals(url)[old_id]
        assert "embedding" in old and "embedding_fast" not in old
        assert old["embedding"].startswith("sscd:") and "@288/" in old["embedding"]

        with service(MODEL_B, inference, url, tmp_path) as matcher:
            assert "embedding" in matcher.query_signals, "the old model was dropped from the queries"
            assert "embedding" not in matcher.new_signals
            found = matcher.match(OFFICER, cropped_copy(corpus, ASTRONAUT)).matches
            by_old_model = [m for m in found if m.reference_id == old_id and m.result.signal == "embedding"]
            assert by_old_model, f"model A's reference no longer matches a crop: {found}"

            other = (corpus / "images" / "img_0001.jpg").read_bytes()
            new_id = matcher.register_reference(OFFICER, "case-b", other).reference_id
            found = matcher.match(OFFICER, cropped_copy(corpus, "img_0001.jpg")).matches
            assert any(m.reference_id == new_id and m.result.signal == "embedding_fast" for m in found), found
        new = stored_signals(url)[new_id]
        assert "embedding_fast" in new and "embedding" not in new, "a new reference got the old model's vectors"
        assert new["embedding_fast"].startswith("sscd_distilled:")


def test_a_changed_model_under_a_stored_signal_refuses_to_start(
        postgres_server: str, inference: Inference, corpus: Path, tmp_path: Path) -> None:
    with fresh_database(postgres_server) as url:
        migrate(url)
        with service(MODEL_A, inference, url, tmp_path) as matcher:
            matcher.register_reference(OFFICER, "case", (corpus / "images" / ASTRONAUT).read_bytes(),
                                       retro_hunt=False)
        resized_input = Settings(models=ModelSettings(embed_size=256))
        with pytest.raises(ModelMismatch, match=r"'embedding' vectors made by sscd:\w+@288.*@256"), \
                service(resized_input, inference, url, tmp_path):
            pass
