"""The DALI pipeline of the decode_dali model: encoded still images in, RGB frames out, decoded on the GPU.

Serialized to 1/model.dali when the production image is built (Dockerfile.gpu), by the Python package of the
DALI that Triton's DALI backend bundles, so the file and the backend agree on the DALI version:

    python3 model_repo_gpu/decode_dali/pipeline.py model_repo_gpu/decode_dali/1/model.dali

The tensor names here are the ones in config.pbtxt: the external source is the model's input and the
decoder's name is its output.
"""

from __future__ import annotations

import sys
from pathlib import Path

INPUT = "encoded"  # UINT8 [-1]: one encoded image file (JPEG, PNG, TIFF, BMP, WebP, JPEG 2000) per batch item
OUTPUT = "frames"  # UINT8 [H, W, 3] RGB per batch item, as frame_sampler's `frames`
MAX_BATCH_SIZE = 32  # = max_batch_size in config.pbtxt


def build_pipeline():  # -> nvidia.dali.Pipeline (imported here: DALI exists only in the production image)
    from nvidia.dali import fn, pipeline_def, types

    # device_id=None lets it be serialized without a GPU (docker build): the DALI backend creates the pipeline
    # with its instance's GPU, the config's max_batch_size and its own thread count (daliCreatePipeline).
    @pipeline_def(batch_size=MAX_BATCH_SIZE, num_threads=4, device_id=None)
    def decode():
        encoded = fn.external_source(name=INPUT, device="cpu", dtype=types.UINT8, ndim=1)
        # "mixed": headers parsed on the CPU, pixels decoded on the GPU (nvJPEG/nvImageCodec). EXIF orientation
        # is applied, as server/media.py does for the CPU path.
        return fn.decoders.image(encoded, device="mixed", output_type=types.RGB, adjust_orientation=True,
                                 name=OUTPUT)

    return decode()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: {Path(__file__).name} OUTPUT_PATH (e.g. model_repo_gpu/decode_dali/1/model.dali)",
              file=sys.stderr)
        return 2
    target = Path(argv[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    build_pipeline().serialize(filename=str(target))
    print(f"serialized the decode_dali pipeline to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
