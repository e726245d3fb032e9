"""Plates with the real ONNX models on real photos (tests/data/plates: CCPD and EasyPR scenes, see
ATTRIBUTION.md): the pipeline reads them, a tampered model is refused, and a gate on virtual
devices grants a known car, refuses an unknown one and reports a plate it cannot read, once each."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.vision.models import MODELS_DIR, ModelError, checked
from edge.vision.plate import PLATE_MODELS, Candidate, PlateRead, PlateReader, _run_split, _vote, beam_search, readings, with_province
from edge.vision.plate_cues import (
    COLOUR,
    EXTRA,
    GREEN,
    PLAIN,
    BlobMemo,
    colour_corners,
    colour_outline,
    deslant,
    order_quad,
    palette,
    proposals,
    proposals_in,
    shrunk,
    tighten,
)
from edge.vision.plate_format import CHARSET, PROVINCES, could_be, is_valid, normalise
from rigs import scene
from rigs.rig import Rig, wait_until
from training.plates.data import colourless, mono

from .conftest import REPO, AppThread, after_start

DATA = Path(__file__).parent / "data" / "plates"
KNOWN, KNOWN_PLATE = "car_known.jpg", "皖AYL375"
STRANGER, STRANGER_PLATE = "car_unknown.jpg", "皖A931Y9"


def rgb(name: str) -> np.ndarray:
    return scene.read_rgb(DATA / name)


@pytest.fixture(scope="module")
def reader():
    return PlateReader()


def test_the_format_check_knows_ordinary_and_new_energy_plates():
    assert is_valid("皖A12345") and is_valid("沪AD12345") and is_valid("粤B12345D") and is_valid("京A1234学")
    assert not is_valid("皖I12345")       # no I: it reads as 1
    assert not is_valid("XA12345")        # not a province
    assert not is_valid("沪AX12345")      # 8 characters but not D/F
    assert not is_valid("皖A1234")        # too short


def test_a_zero_in_the_issuing_code_is_the_letter_o():
    assert normalise("粤0A9112") == "粤OA9112" and is_valid("粤OA9112")  # police plates: 粤O
    assert normalise("皖A00T45") == "皖A00T45"                        # elsewhere a 0 stays a digit
    assert not is_valid("皖AO0T45")


def test_beam_search_gives_the_likely_readings_in_order():
    t = np.full((8, len(CHARSET) + 1), -20.0, np.float32)
    seq = ["皖", None, "A", None, "1", "1", None, "1"]  # a repeated 1 needs a blank between to count twice
    for i, c in enumerate(seq):
        t[i, 0 if c is None else CHARSET.index(c) + 1] = 0.0
    t[2, CHARSET.index("4") + 1] = -1.0  # "4" a close second to "A"
    best = beam_search(t, k=3)
    assert best[0][0] == "皖A11" and best[0][1] > best[1][1] and best[1][0] == "皖411"


def test_the_decoder_follows_only_strings_that_can_still_be_a_plate():
    assert could_be("皖A12") and could_be("沪AD1234") and could_be("粤0A91")   # a 0 second is the letter O
    assert not could_be("皖A123456") and not could_be("A1") and not could_be("沪AX12345")
    # the best path reads the rim after the last character as a ninth one: 皖AW8A088
    t = np.full((15, len(CHARSET) + 1), -20.0, np.float32)
    for i, c in enumerate("皖_A_W_8_A_0_8_8"):
        t[i, 0 if c == "_" else CHARSET.index(c) + 1] = 0.0
    t[13, CHARSET.index("8") + 1] = -4.0  # without the blank between them, the two 8s are one
    free = beam_search(t, k=3)
    assert free[0][0] == "皖AW8A088"
    ruled = beam_search(t, k=3, grammar=could_be)
    assert ruled[0][0] == "皖AW8A08" and all(could_be(s) for s, _ in ruled)


def _path(chars: str, last: dict[str, float], rim: float) -> np.ndarray:
    """Log-probabilities spelling `chars` with blanks between, then a last position split as `last`,
    then a step where the rim reads as one more character with probability `rim`."""
    t = np.full((2 * len(chars) + 2, len(CHARSET) + 1), -30.0, np.float32)
    for i, c in enumerate(chars):
        t[2 * i, CHARSET.index(c) + 1], t[2 * i + 1, 0] = 0.0, 0.0
    for c, p in last.items():
        t[-2, CHARSET.index(c) + 1] = np.log(p)
    t[-1, 0], t[-1, CHARSET.index("7") + 1] = np.log(1 - rim), np.log(rim)
    return t


def test_readings_are_renormalised_over_plates_only_when_mostly_a_plate():
    wan = np.eye(len(PROVINCES))[PROVINCES.index("皖")]  # the province classifier agrees: 皖
    # 70 % a plate, its last character a close call: each reading alone is below min_p (0.3) ...
    t = _path("皖A1234", {"5": 0.35, "6": 0.33, "8": 0.32}, rim=0.3)
    assert max(p for s, p in beam_search(t, k=10, grammar=could_be) if is_valid(s)) < 0.3
    best = readings(t, wan)
    assert best[0][0] == "皖A12345" and best[0][1] > 0.3             # ... as a plate, the likeliest is read
    assert sum(p for _, p in best) == pytest.approx(1.0, abs=0.05)
    # mostly not a plate (overlay text, a sign): nothing is inflated
    t = _path("皖A1234", {"5": 0.35, "6": 0.33, "8": 0.32}, rim=0.6)
    assert sum(p for _, p in readings(t, wan)) < 0.5


def test_the_province_classifier_can_overrule_the_province_but_not_the_rest():
    reads = [("浙A12345", 0.55), ("皖A12345", 0.25), ("浙A12346", 0.1)]
    sure = np.zeros(len(PROVINCES))
    sure[PROVINCES.index("皖")] = 0.95
    sure[PROVINCES.index("浙")] = 0.05
    out = with_province(reads, sure, weight=0.7)
    assert out[0][0] == "皖A12345" and out[0][1] > 0.5
    assert {t[1:] for t, _ in out} == {"A12345", "A12346"}          # never a new rest
    assert abs(sum(p for t, p in out if t.endswith("A12345")) - 0.8) < 0.05  # the rest keeps its probability
    unsure = np.full(len(PROVINCES), 1 / len(PROVINCES))
    assert with_province(reads, unsure, weight=0.7)[0][0] == "浙A12345"  # no opinion: the recogniser's stands


@pytest.mark.parametrize("name,plate", [(KNOWN, KNOWN_PLATE), (STRANGER, STRANGER_PLATE)])
def test_a_real_scene_is_read(reader, name, plate):
    reads = reader.read(rgb(name))
    assert plate in [r.text for r in reads]


def test_the_detector_finds_the_plate_as_well_from_the_shrunk_frame_the_cues_share(reader):
    img = cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR)
    view = shrunk(img)
    assert view[1] < 1.0  # the frame is bigger than the cues' view: the shared path is the one taken
    centre = (295.0, 466.0)  # the middle of the plate's corners as CCPD labels them
    on_plate = [[s for q, s in reader.detect(img, v) if cv2.pointPolygonTest(q[-1].reshape(-1, 1, 2), centre, False) >= 0]
                for v in (None, view)]
    (full,), (shared,) = on_plate  # one region on the plate either way, in frame coordinates ...
    assert shared > 0.8 and abs(full - shared) < 0.05  # ... and as sure of it


def test_a_farther_plate_is_not_read_once_the_nearest_is_read_but_alone_it_is(reader):
    """The gate acts on the widest plate read (the car at the barrier), so once the detector's
    regions read one with confidence the cues' narrower places are not read: they were a third of
    a frame's time. The farther car (the stranger's front at half size, which only the cues find)
    is read as soon as no nearer plate is: here with the near plate painted over."""
    near = rgb(KNOWN)
    far = cv2.resize(rgb(STRANGER)[380:680, 160:560], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    both = near.copy()
    both[40:40 + far.shape[0], 20:20 + far.shape[1]] = far
    assert [r.text for r in reader.read(both) if r.candidates] == [KNOWN_PLATE]
    hidden = both.copy()
    hidden[430:505, 220:380] = both[430:505, 200:210].mean(axis=(0, 1)).astype(np.uint8)
    assert [r.text for r in reader.read(hidden) if r.candidates] == [STRANGER_PLATE]


def test_classic_cues_find_the_plate_without_the_detector():
    img = cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR)
    centre = (295.0, 466.0)  # the middle of the plate's corners as CCPD labels them
    quads = proposals(img)
    assert any(cv2.pointPolygonTest(q.reshape(-1, 1, 2), centre, False) >= 0 for q in quads)
    assert len(quads) <= 8 + EXTRA  # places to try, not a flood


def test_a_loose_outline_is_tightened_to_the_characters(reader):
    img = cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR)
    plate = np.float32([[231, 438], [361, 448], [360, 494], [230, 484]])  # CCPD's corners
    centre = plate.mean(axis=0)
    loose = (plate - centre) * np.float32([1.8, 1.6]) + centre             # a cue's or detector's loose guess
    tight = tighten(img, loose)
    assert tight is not None
    def width(q):
        return float(np.ptp(q[:, 0]))
    assert abs(width(tight) - width(plate)) < 0.2 * width(plate) < abs(width(loose) - width(plate))
    (best, *_), = reader.recognise([reader.rectify(img, tight)])
    assert best.text == KNOWN_PLATE
    assert tighten(img, tight) is None or abs(width(tighten(img, tight)) - width(tight)) < 0.1 * width(tight)  # stable


def test_the_plate_is_found_inside_a_region_much_bigger_than_it(reader):
    img = cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR)
    plate = np.float32([[231, 438], [361, 448], [360, 494], [230, 484]])  # CCPD's corners
    centre = plate.mean(axis=0)
    car = (plate - centre) * np.float32([3.5, 4.0]) + centre               # a region the size of a car's back
    inside = proposals_in(img, car)
    assert 0 < len(inside) <= 3
    hits = [q for q in inside if cv2.pointPolygonTest(q.reshape(-1, 1, 2), tuple(map(float, centre)), False) >= 0]
    assert hits and all(float(np.ptp(q[:, 0])) < 0.5 * float(np.ptp(car[:, 0])) for q in hits)
    assert KNOWN_PLATE in [c[0].text for c in reader.recognise([reader.rectify(img, q) for q in hits]) if c]


def test_a_plate_seen_from_the_side_keeps_its_colour_outline(reader):
    """Yaw foreshortens a plate to under twice as wide as tall (the known car squeezed to 0.55 of
    its width: the plate 1.7 : 1); its colour outline is still found and reads."""
    img = cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR)
    squeezed = cv2.resize(img, None, fx=0.55, fy=1.0, interpolation=cv2.INTER_AREA)
    plate = np.float32([[231, 438], [361, 448], [360, 494], [230, 484]]) * np.float32([0.55, 1.0])
    centre = plate.mean(axis=0)
    outline = colour_outline(squeezed, (plate - centre) * np.float32([1.3, 1.5]) + centre)
    assert outline is not None
    (best, *_), = reader.recognise([reader.rectify(squeezed, outline)])
    assert best.text == KNOWN_PLATE


def _two_tone_plate() -> tuple[np.ndarray, np.ndarray]:
    """A large vehicle's new-energy plate (GA 36: yellow under the province and the letter, green
    after, dark characters) on a grey car, drawn with OpenCV; and its corners."""
    img = np.full((300, 600, 3), (120, 120, 125), np.uint8)
    x0, y0, w, h = 150, 120, 240, 70
    img[y0:y0 + h, x0:x0 + 60] = (20, 190, 240)       # yellow (BGR)
    img[y0:y0 + h, x0 + 60:x0 + w] = (110, 215, 25)   # green
    for i, ch in enumerate("AB12345D"):
        cv2.putText(img, ch, (x0 + 6 + i * 29 + (12 if i > 1 else 0), y0 + 52), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (25, 25, 25), 3)
    return img, np.float32([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]])


def test_a_two_tone_new_energy_plate_is_outlined_whole():
    """Either half alone cuts the province and the letter off (or all the rest): the outline spans
    the yellow and the green together."""
    img, plate = _two_tone_plate()
    centre = plate.mean(axis=0)
    outline = colour_outline(img, (plate - centre) * np.float32([1.2, 1.4]) + centre)
    assert outline is not None
    assert outline[:, 0].min() <= plate[0, 0] + 8 and outline[:, 0].max() >= plate[1, 0] - 8


def _green_plate() -> np.ndarray:
    """A small car's new-energy plate as GA 36 draws it (BGR, 128x32 like a rectified crop): a white
    band along the top over a gradient from pale to deep green, dark characters."""
    img = np.zeros((32, 128, 3), np.uint8)
    pale, deep = np.array([200, 245, 215], np.float32), np.array([70, 190, 40], np.float32)
    for y in range(32):
        img[y] = (245, 245, 245) if y < 6 else (pale + (deep - pale) * (y - 6) / 25).astype(np.uint8)
    for i, ch in enumerate("AD12345"):
        cv2.putText(img, ch, (6 + i * 16 + (6 if i > 0 else 0), 26), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (30, 30, 30), 2)
    return img


def test_the_colour_of_a_plate_picks_its_reader(reader):
    """A green plate, the pale two-tone kind too, goes to the green readers; the real blue plate,
    and a blue plate on a green car, to the colour ones; the blue plate seen without colour (an
    infrared camera at night) to the plain one."""
    blue = reader.rectify(cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR), np.float32([[231, 438], [361, 448], [360, 494], [230, 484]]))
    two_tone, quad = _two_tone_plate()
    on_green_car = cv2.copyMakeBorder(blue[4:28, 8:120], 4, 4, 8, 8, cv2.BORDER_CONSTANT, value=(60, 160, 40))
    crops = np.stack([_green_plate(), reader.rectify(two_tone, quad), blue, on_green_car, mono(blue, (0.11, 0.59, 0.3))])
    assert palette(crops).tolist() == [GREEN, GREEN, COLOUR, COLOUR, PLAIN]


def test_each_crop_is_read_by_the_reader_of_its_colour(reader):
    """A batch of crops of all three palettes: each row's output is its own reader's, in the
    batch's order (a swapped row would give a blue plate a green reading)."""
    blue = reader.rectify(cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR), np.float32([[231, 438], [361, 448], [360, 494], [230, 484]]))
    x = np.stack([blue, _green_plate(), mono(blue, (0.11, 0.59, 0.3)), blue]).astype(np.float32).transpose(0, 3, 1, 2)
    which = np.array([COLOUR, GREEN, PLAIN, COLOUR])
    models = (reader._rec, reader._green, reader._night)
    out = _run_split(x, which, models)
    for rows, model in (([0, 3], reader._rec), ([1], reader._green), ([2], reader._night)):
        assert np.allclose(out[rows], model.run(None, {"image": x[rows]})[0])
    for row in (1, 2):  # the readers differ
        assert not np.allclose(out[row], reader._rec.run(None, {"image": x[row:row + 1]})[0][0])
    (best, *_), = reader.recognise([blue])
    assert best.text == KNOWN_PLATE


@pytest.mark.parametrize("weights", [(0.11, 0.59, 0.3), (0.0, 0.0, 1.0), (0.33, 0.33, 0.34)], ids=["grey", "red", "even"])
def test_a_car_seen_without_colour_is_read(reader, weights):
    """At night a gate camera switches to infrared: no colour, and the plate only lighter or
    darker than its characters, by how its paint reflects. The known car's frame as such a camera
    sees it (its channels mixed three ways) is read as the car; the colour readers alone read the
    red one as 冀AYL375."""
    frame = mono(cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR), weights)
    assert KNOWN_PLATE in {r.text for r in reader.read(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))}


def test_training_batches_are_made_colourless_in_the_share_asked():
    """training.plates.data.colourless: at share 1 every crop loses its colour (its three channels
    alike) and keeps its label; at share 0 the batch is as it was and the generator untouched (the
    models trained before it are made again draw for draw)."""
    crops = [(f"P{i}", np.random.default_rng(i).integers(0, 256, (32, 128, 3), dtype=np.uint8)) for i in range(20)]
    grey = colourless(crops, np.random.default_rng(1), 1.0)
    assert [t for t, _ in grey] == [t for t, _ in crops]
    assert all((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all() for _, img in grey)
    rng = np.random.default_rng(2)
    assert colourless(crops, rng, 0.0) is crops and rng.random() == np.random.default_rng(2).random()


def _blue_crop(province_bars: tuple[int, ...] = (56,)) -> np.ndarray:
    """A small blue plate crop reading 京A81234: the province a boxy glyph with bars across at these
    heights (of 110), the rest drawn in a font."""
    img = np.full((110, 440, 3), (170, 70, 15), np.uint8)
    cv2.rectangle(img, (4, 4), (435, 105), (245, 245, 245), 3)
    cv2.rectangle(img, (18, 22), (56, 90), (245, 245, 245), 6)
    for y in province_bars:
        cv2.line(img, (18, y), (56, y), (245, 245, 245), 6)
    x = 72
    for i, ch in enumerate("A81234"):
        cv2.putText(img, ch, (x, 90), cv2.FONT_HERSHEY_SIMPLEX, 2.6, (245, 245, 245), 7)
        x += 54 + (22 if i == 0 else 0)
    crop = cv2.resize(img, (168, 42), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(crop, 6, 6, 8, 8, cv2.BORDER_CONSTANT, value=(90, 90, 90))


def test_real_glyphs_are_cut_from_a_blue_plate():
    """training.plates.glyphs: a blue plate's seven characters, each cut where it stands, the 1
    narrow, the letters as wide as they are drawn; a plate that is not one gives nothing."""
    from training.plates.glyphs import cut

    glyphs = cut("京A81234", _blue_crop())
    assert glyphs is not None and [c for c, _ in glyphs] == list("京A81234")
    widths = {c: g.shape[1] / g.shape[0] for c, g in glyphs}
    assert widths["1"] < 0.5 * widths["8"] and widths["京"] > 0.4
    assert cut("京A81234", np.full((42, 168, 3), (170, 70, 15), np.uint8)) is None  # a blue board, no characters


def test_a_province_whose_strokes_ran_together_is_left_out_of_the_glyph_bank_alone():
    """A province with its bars packed closer than the crop resolves is a blob once cut: drawn on a
    synthetic plate it would be a dark patch labelled 京. It is left out; the six sharp characters
    of the same crop are kept (the cut itself was right). As many bars a little farther apart, which
    the crop still tells apart, are kept."""
    from training.plates.glyphs import cut

    blurred = cut("京A81234", _blue_crop(province_bars=(30, 38, 46, 54, 62)))
    assert blurred is not None and [c for c, _ in blurred] == list("A81234")
    apart = cut("京A81234", _blue_crop(province_bars=(32, 42, 52, 62, 72)))
    assert apart is not None and [c for c, _ in apart] == list("京A81234")


def test_a_car_seen_from_the_side_is_read(reader):
    """Yaw: the known car squeezed to half its width and sheared, so its plate is a parallelogram
    rising 20 degrees. The rectangle around the plate's colour rectifies it slanted; its four
    corners (the second look's colour_corners) rectify it straight."""
    img = cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR)
    plate = np.float32([[231, 438], [361, 448], [360, 494], [230, 484]])  # CCPD's corners
    yaw = np.float32([[0.5, 0, 0], [0.2, 1, -0.2 * plate[:, 0].mean()]])
    seen = cv2.warpAffine(img, yaw, (img.shape[1] // 2, img.shape[0] + 100))
    skewed = cv2.transform(plate[None], yaw)[0]
    region = (skewed - skewed.mean(axis=0)) * 1.3 + skewed.mean(axis=0)
    corners = colour_corners(seen, region)
    assert corners is not None and np.abs(corners - order_quad(skewed)).max() < 8
    assert KNOWN_PLATE in [r.text for r in reader.read(cv2.cvtColor(seen, cv2.COLOR_BGR2RGB))]
    # the second look finds the corners in the blobs the first look found (BlobMemo), with the same answer
    memo = BlobMemo()
    first = colour_outline(seen, region, memo)
    assert np.array_equal(colour_corners(seen, region, memo), corners)
    assert np.array_equal(colour_outline(seen, region, memo), first)
    assert colour_corners(seen, region + 200, memo) is None  # another region is searched anew: nothing there


@pytest.mark.parametrize("lean", [50, -50])
def test_a_plate_leaning_steeply_is_read_along_its_length(reader, lean):
    """A handheld photo or a camera mounted askew: the known car turned so that its plate leans 50
    degrees either way. The plate's colour blob is proposed although it leans past what any other
    plate-shaped thing may (plate_cues.UPRIGHT), and its outline starts at its long top side: read
    from the image's top-left corner instead, it would be read standing on its end."""
    img = cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR)
    plate = np.float32([[231, 438], [361, 448], [360, 494], [230, 484]])  # CCPD's corners
    h, w = img.shape[:2]
    turn = cv2.getRotationMatrix2D(tuple(map(float, plate.mean(axis=0))), lean, 1.0)  # counter-clockwise for lean > 0
    turned = cv2.warpAffine(img, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
    quad = order_quad(cv2.transform(plate[None], turn)[0][[2, 3, 0, 1]])  # handed over starting anywhere
    assert np.abs(quad - cv2.transform(plate[None], turn)[0]).max() < 1  # ... ordered from the plate's own top-left
    reads = reader.read(cv2.cvtColor(turned, cv2.COLOR_BGR2RGB))
    assert KNOWN_PLATE in [r.text for r in reads]


def test_a_grey_plate_whose_row_of_edges_runs_on_into_a_grille_is_read(reader):
    """At night under infrared a plate has no colour to find it by, only its row of characters;
    when slats beside it continue that row, the row of edges is longer than any plate (8 : 1). It
    is still proposed, beside the plate-shaped places (plate_cues.EXTRA), and read."""
    grey = cv2.cvtColor(cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    plate = np.float32([[231, 438], [361, 448], [360, 494], [230, 484]])  # CCPD's corners
    centre = tuple(map(float, plate.mean(axis=0)))
    for x in range(366, 520, 9):  # slats as tall as the characters, running on from the plate's right
        cv2.line(grey, (x, 452), (x, 486), (20, 20, 20), 3)
    on_plate = [q for q in proposals(cv2.cvtColor(grey, cv2.COLOR_RGB2BGR)) if cv2.pointPolygonTest(q.reshape(-1, 1, 2), centre, False) >= 0]
    assert on_plate and all(np.ptp(q[:, 0]) > 5 * np.ptp(q[:, 1]) for q in on_plate)  # only the long row holds the plate
    assert KNOWN_PLATE in [r.text for r in reader.read(grey)]


def test_an_outline_is_sheared_until_the_characters_stand_upright(reader):
    """Seen from above and aside, a plate's outline can be a rectangle while its characters lean
    (italic). deslant finds the lean from the characters alone and leans the outline with them."""
    img = cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR)
    plate = np.float32([[231, 438], [361, 448], [360, 494], [230, 484]])  # CCPD's corners
    w, h = 200, 64
    rect = np.float32([[20, 16], [20 + w, 16], [20 + w, 16 + h], [20, 16 + h]])
    face = cv2.warpPerspective(img, cv2.getPerspectiveTransform(plate, rect), (w + 40, h + 32), borderMode=cv2.BORDER_REPLICATE)
    assert deslant(face, rect) is None                       # upright already: nothing to do
    for lean in (0.35, -0.3):                                 # tops to the right, then to the left
        leaning = cv2.warpAffine(face, np.float32([[1, -lean, lean * (h + 32) / 2], [0, 1, 0]]), face.shape[1::-1],
                                 borderMode=cv2.BORDER_REPLICATE)
        upright = deslant(leaning, rect)
        assert upright is not None
        assert abs((upright[0, 0] - upright[3, 0]) / h - lean) < 0.06 and abs((upright[1, 0] - upright[2, 0]) / h - lean) < 0.06
        (best, *_), = reader.recognise([reader.rectify(leaning, upright)])
        assert best.text == KNOWN_PLATE


def test_a_plate_in_haze_is_read():
    """Dusk haze: the known car at a tenth of its contrast over a grey veil. Neither the detector
    nor the cues find a plate in it as it is; the pass over the locally equalised frame does."""
    hazy = np.clip(rgb(KNOWN).astype(np.float32) * 0.1 + 60, 0, 255).astype(np.uint8)
    assert KNOWN_PLATE in [r.text for r in PlateReader().read(hazy)]


def test_the_outlines_of_a_region_vote_on_its_reading():
    box = np.float32([[0, 0], [100, 0], [100, 30], [0, 30]])
    cut, whole, loose = box * 0.9, box, box * 1.2
    options = [(cut, [Candidate("皖AYL378", 0.8)]),                       # one outline, confidently wrong
               (whole, [Candidate("皖AYL375", 0.6), Candidate("皖AYL378", 0.1)]),
               (loose, [Candidate("皖AYL375", 0.5)])]
    quad, cands = _vote(options, min_p=0.3)
    assert [c.text for c in cands] == ["皖AYL375", "皖AYL378"]
    assert cands[0].p == 0.6 and quad is whole             # its best single probability, and that outline
    # a runner-up everywhere, confident nowhere, does not come first however often it is seen
    options = [(cut, [Candidate("皖AYL375", 0.35), Candidate("浙AYL375", 0.2)]),
               (whole, [Candidate("皖AYL376", 0.32), Candidate("浙AYL375", 0.25)]),
               (loose, [Candidate("皖AYL378", 0.31), Candidate("浙AYL375", 0.28)])]
    texts = [c.text for c in _vote(options, min_p=0.3)[1]]
    assert texts[0] == "皖AYL375" and "浙AYL375" in texts     # kept as a runner-up for the lookup
    assert _vote([(box, [])], min_p=0.3) == (box, [])


def test_an_outline_that_misses_a_character_votes_for_the_whole_plate():
    """A tight outline that cuts the last character off (a shadow across a plate's end shrinks its
    colour) reads a shorter plate, confidently and validly; so do two equal characters run
    together. Both saw the same plate as the outline that reads it whole."""
    box = np.float32([[0, 0], [100, 0], [100, 30], [0, 30]])
    cut, whole, tight = box * 0.9, box, box * 0.95
    options = [(cut, [Candidate("皖NF9320", 0.99)]),            # 7 characters: an ordinary plate's shape
               (whole, [Candidate("皖NF93204", 0.98)]),
               (tight, [Candidate("皖NF9320", 0.85), Candidate("皖NF93204", 0.13)])]
    quad, cands = _vote(options, min_p=0.3)
    assert cands[0].text == "皖NF93204" and quad is whole
    run_together = [(cut, [Candidate("沪Y9051D", 0.44)]), (tight, [Candidate("沪Y9051D", 0.44)]),
                    (whole, [Candidate("沪Y90051D", 0.76)])]
    assert _vote(run_together, min_p=0.3)[1][0].text == "沪Y90051D"
    # a shorter reading with no longer one around is left alone
    assert _vote([(cut, [Candidate("皖AYL375", 0.9)]), (whole, [Candidate("皖AYL376", 0.5)])], min_p=0.3)[1][0].text == "皖AYL375"


def test_a_crop_cut_square_around_a_slanted_plate_is_read(reader):
    """A plate crop from elsewhere (another camera's, a technician's) is the bounding box of a tilted
    plate, shrunk to the size of a far plate: read_crop finds the plate inside and rectifies it."""
    img = cv2.cvtColor(rgb(KNOWN), cv2.COLOR_RGB2BGR)
    plate = np.float32([[231, 438], [361, 448], [360, 494], [230, 484]])  # CCPD's corners
    turn = cv2.getRotationMatrix2D(tuple(map(float, plate.mean(axis=0))), -12, 1.0)
    slanted = cv2.transform(plate[None], turn)[0]
    x0, y0 = np.floor(slanted.min(axis=0)).astype(int)
    x1, y1 = np.ceil(slanted.max(axis=0)).astype(int)
    crop = cv2.warpAffine(img, turn, img.shape[1::-1])[y0:y1, x0:x1]
    crop = cv2.resize(crop, (94, 24), interpolation=cv2.INTER_AREA)   # the size of the dev set's crops
    best, *_ = reader.read_crop(crop)
    assert best.text == KNOWN_PLATE


def test_one_plate_gives_one_reading_with_the_runners_up_kept():
    box = np.float32([[0, 0], [100, 0], [100, 30], [0, 30]])
    near = box + np.float32([4, 2])
    first = PlateRead(box, [Candidate("皖AYL375", 0.9)], 0.8)
    second = PlateRead(near, [Candidate("皖AYL376", 0.6), Candidate("皖AYL375", 0.2)], 0.0)
    elsewhere = PlateRead(box + np.float32([300, 0]), [Candidate("皖A931Y9", 0.7)], 0.7)
    out = PlateReader._dedupe([second, elsewhere, first])
    assert [r.text for r in out] == ["皖AYL375", "皖A931Y9"]
    assert [c.text for c in out[0].candidates] == ["皖AYL375", "皖AYL376"]


def test_an_unreadable_plate_is_found_but_not_read(reader):
    reads = reader.read(unreadable(rgb(KNOWN)))
    assert reads and all(KNOWN_PLATE not in [c.text for c in r.candidates] for r in reads)


def unreadable(img: np.ndarray) -> np.ndarray:
    """The known car with its characters smeared (mud, a bent plate): the plate is there, unreadable."""
    out = img.copy()
    (quad, _), = [(r.quad, r.score) for r in PlateReader().read(img)][:1]
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    w = x1 - x0
    roi = out[y0 + 3:y1 - 3, x0 + w // 8:x1 - 3]
    out[y0 + 3:y1 - 3, x0 + w // 8:x1 - 3] = cv2.blur(roi, (15, 3))
    return out


def test_a_tampered_model_is_refused(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    data = bytearray((models / "plate_rec.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (models / "plate_rec.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        checked("plate_rec", models)
    assert "plate_rec.onnx: sha256" in str(e.value) and "does not match the manifest" in str(e.value)
    checked("plate_det", models)  # the untouched one still loads


GATE_TOML = """
[[cameras]]
id = "gate-cam"
source = "{frames}"
door = "lobby"
max_fps = 10

[plate]
gone_s = 1.0
unreadable_s = 2.0
"""


def gate_rig(tmp_path, frames: list[np.ndarray], mode: str = "plate") -> Rig:
    folder = scene.write(tmp_path / "frames", frames)
    rig = Rig(tmp_path / "rig", own_pcscd=False, pulse_ms=300, mode=mode, extra_toml=GATE_TOML.format(frames=folder)).start()
    rig.residents_path.write_text(rig.residents_path.read_text() + f"R-0101 Li Wei,plate,{KNOWN_PLATE},lobby,,\n")
    rig.import_residents()
    return rig


def road(n: int) -> list[np.ndarray]:
    return [np.full((1160, 720, 3), 110, np.uint8) for _ in range(n)]


def test_gate_grants_a_known_car_refuses_a_stranger_and_reports_an_unreadable_plate(tmp_path, pcscd):
    known, stranger = rgb(KNOWN), rgb(STRANGER)
    frames = road(3) + [known] * 12 + road(15) + [stranger] * 12 + road(15) + [unreadable(known)] * 40 + road(5)
    rig = gate_rig(tmp_path, frames)
    app = AppThread(rig.config_path).start()
    try:
        try:
            app.wait_event("plate_unreadable", timeout=90)
        except TimeoutError:
            raise AssertionError(f"events so far: {app.reasons()}") from None
        access = [e for e in app.events if e.type == "access"]
        assert [(e.kind, e.reason) for e in access] == [("plate", "granted"), ("plate", "unknown_plate"), ("plate", "plate_unreadable")]
        assert rig.board.wait_for(lambda tl: [w.on for w in after_start(tl)][:2] == [True, False], 3)  # the barrier, once
        assert sum(1 for w in rig.board.timeline if w.on) == 1
        log = "".join(str(e.as_dict()) for e in app.events)
        assert KNOWN_PLATE not in log and STRANGER_PLATE not in log  # tokens only
    finally:
        app.stop()
        rig.stop()


def test_a_tampered_model_never_runs_and_takes_only_vision_down(tmp_path, pcscd):
    """The model is refused (its sha256 differs from the manifest): the worker is not started, the
    outage is journaled and retried, and the rest of the gateway runs on."""
    import os
    import signal

    rig = gate_rig(tmp_path, road(2))
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    data = bytearray((models / "plate_det.onnx").read_bytes())
    data[100] ^= 0xFF
    (models / "plate_det.onnx").write_bytes(bytes(data))
    log = tmp_path / "daemon.log"
    env = dict(os.environ, DOOR_EDGE_MODELS=str(models), PYTHONPATH=str(REPO))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(rig.config_path)], stdout=out,
                                stderr=out, cwd=REPO, env=env)
    try:
        wait_until(lambda: "event=vision_down" in log.read_text(), 60, "vision reported down")
        assert "plate_det.onnx: sha256" in log.read_text() and proc.poll() is None
        wait_until(lambda: rig.board.requests > 2, 10, "the door board still served")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        rig.stop()


def test_diag_checks_the_models_and_outlines_the_plate_without_its_text(tmp_path, pcscd):
    import json

    rig = gate_rig(tmp_path, [rgb(KNOWN)] * 30)
    try:
        res = subprocess.run([sys.executable, "-m", "edge", "diag", "--config", str(rig.config_path), "--json"],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
        checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
        assert all(checks[f"model {m}"]["status"] == "ok" for m in PLATE_MODELS)
        snap = checks["snapshot gate-cam"]
        assert snap["status"] == "ok" and "1 readable" in snap["detail"]
        (png,) = (rig.root / "state" / "diag").glob("snapshot-gate-cam-*.png")
        assert scene.read_rgb(png).shape == rgb(KNOWN).shape
        assert KNOWN_PLATE not in res.stdout
    finally:
        rig.stop()


@pytest.mark.parametrize("kinds", [("scene",), ("crop",)], ids=["no crops", "no scenes"])
def test_the_plate_bench_line_is_json_when_a_set_is_empty(tmp_path, kinds):
    """A data set without crops, or without scenes: those figures are null, never NaN (not JSON)."""
    from devtools.bench_plate import bench_plate

    shutil.copy(DATA / "car_known.jpg", tmp_path / "car.jpg")
    (tmp_path / "labels.csv").write_text("file,plate,kind\n" + "".join(f"car.jpg,皖AYL375,{k}\n" for k in kinds), encoding="utf-8")
    result = bench_plate(tmp_path, green_n=2)
    line = json.dumps(result, allow_nan=False)  # raises on NaN
    empty = "crop_exact" if kinds == ("scene",) else "scene_exact"
    assert json.loads(line)[empty] is None and result["crops" if empty == "crop_exact" else "scenes"] == 0
    assert result["colourless"][empty] is None
    assert result["green_real"] == 0 and result["green_real_exact"] is None  # no 8-character plate in the set


def test_the_plate_bench_counts_real_green_plates(tmp_path):
    """green_real_exact: the 8-character (new-energy) rows of the judged set, crops and scenes."""
    from devtools.bench_plate import bench_plate

    shutil.copy(DATA / "car_known.jpg", tmp_path / "car.jpg")
    (tmp_path / "labels.csv").write_text("file,plate,kind\ncar.jpg,皖AYL375,scene\ncar.jpg,皖AD12345,scene\n", encoding="utf-8")
    result = bench_plate(tmp_path, green_n=2)
    assert result["green_real"] == 1 and result["green_real_exact"] == 0.0  # the photo's plate is blue
    assert result["scene_exact"] == 0.5
    assert result["colourless"]["scene_exact"] == 0.5  # the known car in grey is read too
