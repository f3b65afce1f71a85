"""The console's pictures of an item: a small thumbnail of its captured media (or of its page screenshot), and PNG
responses for them. Blurring and greying (`clients.evidence.reports.obscure`) is the pages' business: this only
decodes and shrinks."""

from __future__ import annotations

import io

import numpy as np
from flask import Response, send_file
from PIL import Image
from psycopg import Connection

from clients.evidence.reports import screenshot_view
from clients.evidence.vault import Vault
from clients.evidence.writer import read_artefact
from server.config import MediaLimits
from server.media import decode_media

THUMBNAIL_PX = 360


def media_thumbnail(conn: Connection, vault: Vault, item_id: int, at_s: float, limits: MediaLimits
                    ) -> Image.Image | None:
    """A small picture of the item's captured media (for a video: the frame nearest `at_s`, where it matched), or
    of the top of its page screenshot when the media could not be fetched; None before the capture."""
    data = read_artefact(conn, vault, item_id, "media")
    if data is not None:
        try:
            decoded = decode_media(data, limits)
        except Exception:  # the bytes a site serves need not decode: fall back to the screenshot
            decoded = None
        if decoded is not None:
            frame = decoded.frames[int(np.abs(decoded.timestamps - at_s).argmin())]
            picture = Image.fromarray(frame)
            picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            return picture
    png = read_artefact(conn, vault, item_id, "screenshot")
    if png is None:
        return None
    picture = Image.open(io.BytesIO(screenshot_view(png, reveal=True).png))
    picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX * 2))
    return picture.convert("RGB")


def png_response(picture: Image.Image | bytes) -> Response:
    """A picture (or PNG bytes) as an uncached PNG response."""
    if isinstance(picture, Image.Image):
        out = io.BytesIO()
        picture.save(out, "PNG")
        picture = out.getvalue()
    return send_file(io.BytesIO(picture), mimetype="image/png", max_age=0)
