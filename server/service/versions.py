"""Model versions: which signals a service searches with, given the model ids the database holds.

Every stored vector row records the model that made it (`server.models.versions`). Reference media are never
kept, so a reference cannot be embedded again by a new model: a new model is added beside the old one as a
signal of its own (`MatchSettings.signals` names the signals new media gets), and queries are searched with
both for as long as stored references or negative-bank entries hold the old one. Changing the model under an
existing signal name would compare vectors of two models: the service refuses to start instead.
"""

from __future__ import annotations

from server.signals import SIGNALS, Signal
from server.storage.store import Store

# Sightings do not keep a signal in use: they are every crawled item, and would keep a retired model running for
# ever. A sighting found only by a retired model's vectors is no longer found; its references still are.
KEEPS_IN_USE = ("references", "benign")


class ModelMismatch(RuntimeError):
    """Stored vectors were made by another model than this service makes the same signal with."""


def signals_in_use(store: Store, configured: dict[str, Signal], models: dict[str, str]) -> dict[str, Signal]:
    """The signals queries are searched with: the configured ones and every one stored references or
    negative-bank entries hold, in registry order. `models`: each signal's model id under this service's
    settings. Raises ModelMismatch where a collection holds rows of an unknown signal or of another model."""
    in_use = set(configured)
    for collection in ("references", "sightings", "benign"):
        for (name, model), owners in sorted(store.stored_models(collection).items()):  # type: ignore[arg-type]
            if name not in SIGNALS:
                raise ModelMismatch(f"{owners} {collection} hold vectors of signal {name!r}, which no registered "
                                    f"signal makes (registered: {sorted(SIGNALS)})")
            if model != models[name]:
                raise ModelMismatch(
                    f"{owners} {collection} hold {name!r} vectors made by {model}, but this service makes {name!r} "
                    f"with {models[name]}. Vectors of two models cannot be compared, and reference media are not "
                    f"kept to embed again: restore the settings that made {model}, or add the new model as a "
                    "signal of its own beside it (MatchSettings.signals) until the old references are "
                    "re-registered or retired.")
            if collection in KEEPS_IN_USE:
                in_use.add(name)
    return {name: signal for name, signal in SIGNALS.items() if name in in_use}
