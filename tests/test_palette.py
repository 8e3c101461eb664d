"""The class-label palette: neighbouring colours differ in hue and lightness, also for
colour-blind readers; every colour a label figure shows has a legend entry.

The colour science is done here, independently of vizkit: sRGB to CIELAB (D65), CIEDE2000
(Sharma, Wu and Dalal 2005, checked against their published test pairs) and the colour-vision
deficiency simulation of Machado, Oliveira and Fernandes (2009, severity 1, in linear RGB)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgb

from vizkit.toolkit.figures import (
    LABEL_COLOURS,
    OTHER_COLOUR,
    label_colours,
    label_key,
    new_figure,
    overlapping_texts,
    text_colour,
)

MACHADO = {
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}
VISION = ("normal", *MACHADO)

# what the palette must keep: neighbours this far apart (CIEDE2000) with every kind of vision,
# and this far apart in lightness (L*) with normal vision and the two red-green deficiencies
MIN_NEIGHBOUR_DELTA_E = 20.0
MIN_NEIGHBOUR_LIGHTNESS = 15.0
MIN_FIRST_FOUR_DELTA_E = 20.0  # the four commonest labels all distinct (red-green deficiencies too)


def _linear(rgb: np.ndarray) -> np.ndarray:
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _gamma(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def simulate(rgb: np.ndarray, vision: str) -> np.ndarray:
    """[n, 3] sRGB colours as a reader with ``vision`` sees them."""
    if vision == "normal":
        return rgb
    return _gamma(_linear(rgb) @ np.asarray(MACHADO[vision]).T)


def lab(rgb: np.ndarray) -> np.ndarray:
    """[n, 3] sRGB in [0, 1] as CIELAB (D65 white)."""
    xyz = (
        _linear(np.asarray(rgb, dtype=float))
        @ np.array(
            [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
        ).T
    )
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> float:
    """The CIEDE2000 colour difference of two CIELAB colours (kL = kC = kH = 1)."""
    (l1, a1, b1), (l2, a2, b2) = lab1, lab2
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360 if c1p else 0.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360 if c2p else 0.0
    dl, dc = l2 - l1, c2p - c1p
    dh = 0.0
    if c1p * c2p:
        dh = h2p - h1p
        dh = dh - 360 if dh > 180 else dh + 360 if dh < -180 else dh
    d_big_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_mean, cp_mean = (l1 + l2) / 2, (c1p + c2p) / 2
    if c1p * c2p == 0:
        h_mean = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        h_mean = (h1p + h2p) / 2
    else:
        h_mean = (h1p + h2p + 360) / 2 if h1p + h2p < 360 else (h1p + h2p - 360) / 2
    t = (
        1
        - 0.17 * np.cos(np.radians(h_mean - 30))
        + 0.24 * np.cos(np.radians(2 * h_mean))
        + 0.32 * np.cos(np.radians(3 * h_mean + 6))
        - 0.20 * np.cos(np.radians(4 * h_mean - 63))
    )
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = (
        -2 * np.sqrt(cp_mean**7 / (cp_mean**7 + 25**7)) * np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2))))
    )
    return float(np.sqrt((dl / s_l) ** 2 + (dc / s_c) ** 2 + (d_big_h / s_h) ** 2 + r_t * (dc / s_c) * (d_big_h / s_h)))


@pytest.mark.parametrize(
    "first,second,expected",  # Sharma, Wu and Dalal (2005), Table 1: pairs 1, 7, 17, 25, 34
    [
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
        ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
        ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
    ],
)
def test_ciede2000_matches_the_published_pairs(first, second, expected):
    assert ciede2000(np.array(first), np.array(second)) == pytest.approx(expected, abs=1e-4)


def test_cielab_of_known_colours():
    shown = lab(np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert shown[0] == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    assert shown[1] == pytest.approx([53.24, 80.09, 67.20], abs=0.05)
    assert shown[2] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)


def neighbour_distances(colours) -> dict[str, tuple[float, float, float]]:
    """Per kind of vision: the smallest CIEDE2000 between neighbours, the smallest lightness
    difference between neighbours, and the smallest CIEDE2000 among the first four colours."""
    rgb = np.array([to_rgb(c) for c in colours])
    found = {}
    for vision in VISION:
        shown = lab(simulate(rgb, vision))
        steps = [ciede2000(shown[i], shown[i + 1]) for i in range(len(shown) - 1)]
        lightness = [abs(shown[i, 0] - shown[i + 1, 0]) for i in range(len(shown) - 1)]
        first = [ciede2000(shown[i], shown[j]) for i in range(4) for j in range(i + 1, 4)]
        found[vision] = (min(steps), min(lightness), min(first))
    return found


def distinct_enough(colours) -> bool:
    found = neighbour_distances(colours)
    return all(found[v][0] >= MIN_NEIGHBOUR_DELTA_E for v in VISION) and all(
        found[v][1] >= MIN_NEIGHBOUR_LIGHTNESS and found[v][2] >= MIN_FIRST_FOUR_DELTA_E
        for v in ("normal", "deuteranopia", "protanopia")
    )


def test_neighbouring_label_colours_differ_in_hue_and_lightness_for_every_reader():
    colours = label_colours(len(LABEL_COLOURS) + 1)  # the palette, then the grey the rest share
    assert colours[-1] == OTHER_COLOUR and len(set(colours)) == len(colours)
    found = neighbour_distances(colours)
    for vision in VISION:
        delta_e, lightness, first = found[vision]
        assert delta_e >= MIN_NEIGHBOUR_DELTA_E, (vision, delta_e)
        if vision != "tritanopia":
            assert lightness >= MIN_NEIGHBOUR_LIGHTNESS, (vision, lightness)
            assert first >= MIN_FIRST_FOUR_DELTA_E, (vision, first)
    assert distinct_enough(colours)


@pytest.mark.parametrize("name", ["tab10", "tab20", "Set1", "Paired"])
def test_matplotlibs_palettes_would_fail_the_same_check(name):
    """A return to tab10/tab20 (tench and garbage truck two oranges, chain saw and parachute two
    blues) fails the test above."""
    palette = colormaps[name]
    colours = [palette(i) for i in range(min(palette.N, 10))]
    assert not distinct_enough(colours)


def test_labels_beyond_the_palette_share_the_grey_and_the_legend_names_every_colour():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 30, size=(12, 12))
    labels[:6] = 7  # the commonest label gets the first colour
    key = label_key(labels)
    assert key.labels[0] == 7 and key.colour(7) == LABEL_COLOURS[0]
    assert list(key.counts) == sorted(key.counts, reverse=True)
    assert key.other == len(key.labels) - len(LABEL_COLOURS) > 0
    assert {key.colour(label) for label in key.labels[len(LABEL_COLOURS) :]} == {OTHER_COLOUR}
    codes = key.codes(labels)
    assert codes.shape == labels.shape and np.all(np.asarray(key.labels)[codes] == labels)

    handles = key.legend_handles(lambda label: f"class {label}", counted="positions")
    shown = {tuple(np.round(h.get_facecolor()[:3], 4)) for h in handles}
    assert shown == {tuple(np.round(to_rgb(c), 4)) for c in set(key.colours)}  # every colour, once
    assert handles[-1].get_label() == f"other ({key.other} labels, {sum(key.counts[9:])} positions)"
    assert handles[0].get_label() == f"class 7 ({key.counts[0]})"

    few = label_key(np.array([[3, 3, 5]]))
    assert few.other == 0 and [h.get_label() for h in few.legend_handles(str)] == ["3", "5"]


def test_label_image_and_legend_draw_without_overlap():
    labels = np.repeat(np.arange(12), 3).reshape(6, 6)
    key = label_key(labels)
    figure = new_figure(4, 3)
    ax = figure.add_subplot(1, 1, 1)
    ax.imshow(key.codes(labels), **key.imshow_args())
    ax.legend(handles=key.legend_handles(lambda label: f"label {label}"), fontsize=6, loc="upper left")
    figure.subplots_adjust(right=0.6)
    image = ax.get_images()[0]
    drawn = np.asarray(image.cmap(image.norm(key.codes(labels))))[..., :3]
    expected = np.array([to_rgb(key.colour(int(v))) for v in labels.ravel()]).reshape(6, 6, 3)
    assert np.allclose(drawn, expected, atol=1 / 255)
    assert overlapping_texts(figure) == []


def test_text_on_a_colour_is_black_or_white_whichever_reads():
    assert text_colour("#332288") == "white" and text_colour("#882255") == "white"
    assert text_colour("#DDCC77") == "black" and text_colour(OTHER_COLOUR) == "black"
