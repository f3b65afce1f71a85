"""The precision benchmark's parts: synthetic screens, the new uploader transforms, ORB local features."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bench import screens, transforms
from server.config import Settings
from server.models.local_features import LOCAL_SIDE, LocalFeaturesModel


def test_screens_are_deterministic_and_differ_by_seed():
    kind_a, a = screens.screen(11)
    kind_b, b = screens.screen(11)
    _, c = screens.screen(12)
    assert kind_a == kind_b and kind_a in screens.KINDS
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert a.size != c.size or not np.array_equal(np.asarray(a), np.asarray(c))


def test_new_transforms_keep_the_picture_inside(corpus):
    image = transforms.load(next((corpus / "images").glob("*.jpg")))
    shot = transforms.TRANSFORMS["screenshot"](image)
    assert shot.size != image.size
    assert transforms.TRANSFORMS["stretch"](image).width > image.width
    rotated = transforms.TRANSFORMS["rotate"](image)
    assert rotated.width > image.width and rotated.height > image.height  # expanded, corners filled


def test_local_features_describe_each_frame_and_its_mirror(corpus):
    image = transforms.load(next((corpus / "images").glob("*.jpg")))
    frames = np.stack([np.asarray(image), np.asarray(image)])
    out = LocalFeaturesModel(Settings())(frames=frames)
    assert out["local_descriptors"].shape[1] == 32 and out["local_descriptors"].dtype == np.uint8
    assert set(out["local_frame"].tolist()) == {0, 1}
    assert out["local_mirrored"].any() and (~out["local_mirrored"]).any()
    assert out["local_keypoints"][:, :2].max() <= LOCAL_SIDE
    mirrored = np.asarray(Image.fromarray(frames[0]).transpose(Image.FLIP_LEFT_RIGHT))
    flipped = LocalFeaturesModel(Settings())(frames=mirrored[None])
    # the mirrored rows of the original are the unmirrored rows of the mirror image
    first = out["local_frame"] == 0
    assert np.array_equal(out["local_descriptors"][first & out["local_mirrored"]],
                          flipped["local_descriptors"][~flipped["local_mirrored"]])
