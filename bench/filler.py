"""The precision set: filler references, a background bank and unrelated queries, kept apart from each other.

    .venv/bin/python -m bench.filler [--out var/precision]

Filler are benign images that no query copies, registered as extra references to measure how often an unrelated
item matches *some* reference as the number of references grows. They come from Debian data packages (clip-art,
textures, game renders, level screenshots: `../shared/corpus/build_filler.py` fetches and unpacks them) and from
`bench.screens` (web pages and app screens with Korean and English text).

Three roles, split by source package and by seed range so that no image, and no near-copy from the same package,
serves two of them:
- **filler**: references that no query copies;
- **background**: the images whose regions are to make the background bank of score normalisation;
- **unrelated**: queries that copy no reference, each under one uploader transform like a crawled picture.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.screens import write as write_screens

ROOT = Path(__file__).resolve().parents[1]
BUILDER = ROOT.parent / "shared" / "corpus" / "build_filler.py"
DEFAULT_OUT = ROOT / "var" / "precision"
BACKGROUND_PACKAGES = frozenset({"hedgewars-data", "scorched3d-data"})  # drawings, renders, textures
UNRELATED_PACKAGES = frozenset({"freedroidrpg-data", "neverball-data"})  # rendered art, level screenshots
SCREEN_SEEDS = {"filler": range(0, 1500), "background": range(500_000, 500_600),
                "unrelated": range(900_000, 900_400)}


def build(out: Path) -> dict[str, list[dict]]:
    """Build (or reuse) the package images and the screens; return the entries of each role."""
    packages = out / "packages"
    subprocess.run([sys.executable, str(BUILDER), str(packages)], check=True)
    manifest = json.loads((packages / "manifest.json").read_text())
    roles: dict[str, list[dict]] = {"filler": [], "background": [], "unrelated": []}
    for entry in manifest["images"]:
        role = ("background" if entry["source"] in BACKGROUND_PACKAGES else
                "unrelated" if entry["source"] in UNRELATED_PACKAGES else "filler")
        roles[role].append({**entry, "file": f"packages/{entry['file']}"})
    screens = out / "screens"
    for role, seeds in SCREEN_SEEDS.items():
        listing = screens / f"{role}.json"
        if listing.exists() and len(json.loads(listing.read_text())) == len(seeds):
            entries = json.loads(listing.read_text())
        else:
            entries = write_screens(screens, seeds, role[0])
            listing.write_text(json.dumps(entries))
        roles[role] += [{**e, "file": f"screens/{e['file']}"} for e in entries]
    (out / "roles.json").write_text(json.dumps(roles, indent=0))
    return roles


def load_roles(out: Path = DEFAULT_OUT) -> dict[str, list[dict]]:
    path = out / "roles.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: build the precision set first (python -m bench.filler)")
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    roles = build(args.out)
    for role, entries in roles.items():
        print(f"{role}: {len(entries)} images")


if __name__ == "__main__":
    main()
