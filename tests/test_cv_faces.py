"""Face blurring on a real photo (scikit-image's astronaut): the face is found before and not after, the face
region is changed beyond recognition, the rest of the picture is kept, and heads of people without a found face
are covered too."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from edge_cv.faces import FaceBlurrer, blur_faces

# Where Eileen Collins' face is in the 512x512 astronaut picture (hand-marked: brow to chin, ear to ear).
FACE = (180, 70, 280, 170)


@pytest.fixture(scope="module")
def blurrer() -> FaceBlurrer:
    return FaceBlurrer()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_haar_finds_the_astronauts_face_before_blurring_and_not_after(blurrer, astronaut):
    before = blurrer.find(astronaut)
    assert any(_overlaps(f, FACE) for f in before), before
    blurred = blurrer.blur(astronaut)
    assert not any(_overlaps(f, FACE) for f in blurrer.find(blurred))
    # A second cascade (not the one that chose what to blur) finds the face before and not after, either.
    other = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml")

    def other_finds(image: np.ndarray) -> bool:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return any(_overlaps((x, y, x + w, y + h), FACE) for x, y, w, h in other.detectMultiScale(grey, 1.1, 2))

    assert other_finds(astronaut) and not other_finds(blurred)


def test_blurred_face_loses_its_detail_and_the_input_is_untouched(blurrer, astronaut):
    original = astronaut.copy()
    blurred = blur_faces(astronaut, blurrer=blurrer)
    assert np.array_equal(astronaut, original)
    x1, y1, x2, y2 = FACE
    face_before = cv2.cvtColor(astronaut[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    face_after = cv2.cvtColor(blurred[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    # Edge energy (Laplacian variance) measures detail: eyes, nose and mouth are gone.
    detail_before = cv2.Laplacian(face_before, cv2.CV_64F).var()
    detail_after = cv2.Laplacian(face_after, cv2.CV_64F).var()
    assert detail_after < 0.02 * detail_before
    assert np.abs(face_after.astype(int) - face_before.astype(int)).mean() > 10
    # Far from any face the picture is unchanged (the helmet on the table, bottom right).
    assert np.array_equal(blurred[400:500, 300:400], astronaut[400:500, 300:400])


def test_person_without_a_found_face_gets_the_head_region_blurred(blurrer):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(480, 320, 3), dtype=np.uint8)
    scene = cv2.GaussianBlur(noise, (3, 3), 0)  # texture, no face anywhere
    person = (100.0, 100.0, 200.0, 400.0)
    out = blurrer.blur(scene, person_boxes=[person])
    head = (slice(100, 190), slice(100, 200))  # top 30% of the person box
    body = (slice(200, 400), slice(100, 200))
    assert cv2.Laplacian(out[head], cv2.CV_64F).var() < 0.05 * cv2.Laplacian(scene[head], cv2.CV_64F).var()
    assert np.array_equal(out[body], scene[body])
    assert np.array_equal(blurrer.blur(scene), scene)  # no person, no face: nothing to hide


def test_person_whose_face_was_found_is_not_blurred_twice_over_the_head(blurrer, astronaut):
    # The astronaut as a person box: her face is found, so only the face (with margin) is pixelated and the
    # top corners of the box — outside the face — keep their pixels.
    person = (120.0, 0.0, 400.0, 512.0)
    out = blurrer.blur(astronaut, person_boxes=[person])
    assert np.array_equal(out[0:40, 120:140], astronaut[0:40, 120:140])
