"""Real-world image files read as a person sees them: EXIF orientation, bit depths, transparency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vizkit
from helpers import LABELS, SQUEEZENET_WEIGHTS, needs_shared, sample
from vizkit.app.cli import main


def pixels(path) -> np.ndarray:
    return np.asarray(vizkit.load_image(path))


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo: stored landscape (left half red), tagged 'rotate 90 clockwise' (6)."""
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :30] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    upright = pixels(path)
    assert upright.shape == (60, 40, 3)  # portrait, as the phone showed it
    assert upright[:25, :, 0].mean() > 200 and upright[35:, :, 0].mean() < 50  # red on top after the turn


def test_sixteen_bit_greyscale_is_scaled_not_white(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "depth.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    got = pixels(path)[..., 0].astype(float)
    assert got.min() == 0 and got.max() == 255
    assert np.abs(got - ramp / 257.0).max() <= 0.5 + 1e-9  # 8-bit rounding of the 16-bit values


@pytest.mark.parametrize(
    "values,expected",
    [
        (np.array([[0, 100], [200, 255]], np.int32), [[0, 100], [200, 255]]),  # 8-bit data in 32 bits
        (np.array([[0, 65535], [257, 514]], np.int32), [[0, 255], [1, 2]]),  # 16-bit data in 32 bits
        (np.array([[-10, 0], [10, 90]], np.int32), [[0, 26], [51, 255]]),  # unknown range: stretched
    ],
)
def test_32_bit_integer_images(values, expected, tmp_path):
    path = tmp_path / "i32.tiff"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I"
    assert pixels(path)[..., 1].tolist() == expected


@pytest.mark.parametrize(
    "values,expected",
    [
        (np.array([[0.0, 0.5], [0.25, 1.0]], np.float32), [[0, 128], [64, 255]]),  # [0, 1]: x255
        (np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32), [[0, 64], [128, 255]]),  # stretched
    ],
)
def test_float_images(values, expected, tmp_path):
    path = tmp_path / "f.tiff"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "F"
    assert pixels(path)[..., 2].tolist() == expected


def test_transparent_pixels_are_white_whatever_colour_they_hide(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (0, 0, 0)  # black under full transparency
    rgba[0, 0] = (255, 0, 0, 255)  # one opaque red pixel
    rgba[1, 1] = (0, 0, 255, 128)  # half-transparent blue
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    got = pixels(path)
    assert got[3, 3].tolist() == [255, 255, 255] and got[0, 0].tolist() == [255, 0, 0]
    assert got[1, 1].tolist() == [127, 127, 255] or got[1, 1].tolist() == [128, 128, 255]


def test_palette_image_with_a_transparent_colour(tmp_path):
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * (254 * 3))  # index 0 black, 1 green
    palette.putpixel((2, 2), 1)
    path = tmp_path / "palette.png"
    palette.save(path, transparency=0)
    got = pixels(path)
    assert got[0, 0].tolist() == [255, 255, 255] and got[2, 2].tolist() == [0, 255, 0]


def test_plain_images_are_unchanged(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = tmp_path / "plain.png"
    Image.fromarray(rgb).save(path)
    assert np.array_equal(pixels(path), rgb)
    grey = tmp_path / "grey.png"
    Image.fromarray(rgb[..., 0]).save(grey)
    assert np.array_equal(pixels(grey), np.repeat(rgb[..., :1], 3, axis=2))


@pytest.mark.parametrize("mode", ["L", "RGB", "I;16"])
def test_a_transparent_colour_key_is_white_in_every_mode(mode, tmp_path):
    """PNG's tRNS chunk on a greyscale, RGB or 16-bit image names one transparent colour: those
    pixels are white, as in RGBA files and palette images (they used to show the hidden colour)."""
    grey = np.full((4, 4), 50, np.uint8)
    grey[0, 0] = 200
    if mode == "L":
        image, key = Image.fromarray(grey), 50
    elif mode == "RGB":
        image, key = Image.fromarray(np.stack([grey, grey // 2, grey // 5], axis=2)), (50, 25, 10)
    else:
        image, key = Image.fromarray(grey.astype(np.uint16) * 257), 50 * 257
    path = tmp_path / "keyed.png"
    image.save(path, transparency=key)
    assert Image.open(path).mode == mode and Image.open(path).info["transparency"] == key
    got = pixels(path)
    assert (got[1:] == 255).all() and (got[0, 1:] == 255).all()  # the keyed colour, everywhere it is
    assert got[0, 0].tolist() == ([200, 100, 40] if mode == "RGB" else [200] * 3)  # other colours kept


def test_nan_and_infinite_pixels_of_float_images(tmp_path):
    """One NaN (no value) or inf used to make the range NaN and the whole image black."""
    values = np.array([[0.0, 0.5, np.nan], [1.0, np.inf, -np.inf]], np.float32)
    path = tmp_path / "nodata.tiff"
    Image.fromarray(values).save(path)
    assert pixels(path)[..., 0].tolist() == [[0, 128, 255], [255, 255, 0]]  # NaN white like transparency
    stretched = np.array([[-1.0, 3.0], [np.nan, 1.0]], np.float32)
    Image.fromarray(stretched).save(path)
    assert pixels(path)[..., 0].tolist() == [[0, 255], [255, 128]]


def test_premultiplied_alpha_images():
    """``La`` could not be converted at all (a ValueError from Pillow); ``RGBa`` is composited."""
    la = Image.fromarray(np.array([[[100, 255], [100, 0]]], np.uint8), "LA").convert("La")
    assert np.asarray(vizkit.data.to_rgb(la))[0, :, 0].tolist() == [100, 255]
    rgba = Image.fromarray(np.array([[[200, 10, 20, 255], [0, 0, 0, 0]]], np.uint8), "RGBA").convert("RGBa")
    assert np.asarray(vizkit.data.to_rgb(rgba))[0].tolist() == [[200, 10, 20], [255, 255, 255]]


def test_an_extreme_shape_is_resized_only_where_the_crop_keeps(tmp_path):
    """A 1 x 200,000 px PNG is 860 bytes, but its shorter-side resize to 256 was 256 x 51,200,000
    px (39 GB): a MemoryError or the machine's end. Only the centre crop's part is resampled now,
    at the full resize's filter positions (within one 8-bit level of it)."""
    ramp = np.linspace(0, 255, 5000).astype(np.uint8)
    tall = Image.fromarray(np.stack([np.repeat(ramp[:, None], 1, axis=1)] * 3, axis=2))
    preprocess = vizkit.Preprocess(resize=64, crop=32)  # 64 x 320,000 px: past the limit, still computable
    assert np.prod(preprocess.resized_size(*tall.size)) > vizkit.data.preprocess.RESIZE_PIXELS
    reference = preprocess.transform()(tall)
    assert (preprocess(tall) - reference).abs().max() <= 1.01 / 255 / min(preprocess.std)
    path = tmp_path / "sliver.png"
    Image.new("RGB", (1, 200_000), (5, 5, 5)).save(path)
    assert vizkit.load_images([path]).shape == (1, 3, 224, 224)


def test_labels_of_another_length_are_refused_by_every_analysis(bundled_model, photo_path, tmp_path, capsys):
    """A 10-class model with the 1,000 ImageNet names would say 'goldfish' for class 1."""
    needs_shared(LABELS)
    names = LABELS.read_text().splitlines()
    for analysis, options in (("deconvnet", {"layer": "conv5"}), ("filters", {}), ("top9", {"layer": "conv5"})):
        with pytest.raises(vizkit.UsageError, match="1000 labels given but the model has 10 outputs"):
            vizkit.run(analysis, bundled_model, images=[photo_path], data=photo_path.parent, labels=names, **options)
    argv = ["run", "deconvnet", "--model", "zfnet-compact", "--image", str(photo_path), "--labels", str(LABELS)]
    argv += ["--layer", "conv5"]
    assert main([*argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "1000 labels given but the model has 10 outputs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_target_names_that_two_classes_share_are_refused_and_wnids_accepted(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("n01\ttench\nn02\tcrane\nn03\tcrane\nn04\tPomeranian\n")
    labels = vizkit.data.read_labels(path)
    assert labels == ["tench", "crane", "crane", "Pomeranian"] and labels.wnids == ["n01", "n02", "n03", "n04"]
    with pytest.raises(
        vizkit.UsageError, match=r"target 'crane' names several classes \(1 and 2\); give the index or the wnid"
    ):
        vizkit.data.resolve_target("crane", labels, 4)
    assert vizkit.data.resolve_target("n03", labels, 4) == 2
    assert vizkit.data.resolve_target("pomeranian", labels, 4) == 3
    plain = tmp_path / "plain.txt"
    plain.write_text("tench\ncrane\n")
    assert vizkit.data.read_labels(plain).wnids is None
    with pytest.raises(vizkit.UsageError, match="unknown target class 'n01'"):
        vizkit.data.resolve_target("n01", vizkit.data.read_labels(plain), 2)


def test_a_labels_file_with_a_byte_order_mark(tmp_path):
    """A byte-order mark used to stick to the first name (or wnid): that class could not be
    given as a target, and figures printed an invisible character."""
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffn01440764\ttench\r\nn01443537\tgoldfish\r\n\r\n".encode())
    labels = vizkit.data.read_labels(path)
    assert list(labels) == ["tench", "goldfish"] and labels.wnids == ["n01440764", "n01443537"]
    assert vizkit.data.resolve_target("n01440764", labels, 2) == 0
    path.write_bytes("\ufefftench\ngoldfish\n".encode())
    assert vizkit.data.resolve_target("tench", vizkit.data.read_labels(path), 2) == 0


def test_caffes_synset_words_file_gives_wnids_and_first_synonyms(tmp_path):
    """Caffe's synset_words.txt ("n01440764 tench, Tinca tinca") was read as whole-line names, so
    --target tench matched nothing and figures printed the wnid and every synonym."""
    path = tmp_path / "synset_words.txt"
    path.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn02085620 Chihuahua\n")
    labels = vizkit.data.read_labels(path)
    assert list(labels) == ["tench", "goldfish", "Chihuahua"]
    assert labels.wnids == ["n01440764", "n01443537", "n02085620"]
    assert (
        vizkit.data.resolve_target("goldfish", labels, 3) == 1
        and vizkit.data.resolve_target("n02085620", labels, 3) == 2
    )
    path.write_text("n01440764 tench\nnot a synset line\n")  # not every line: plain names, kept whole
    assert list(vizkit.data.read_labels(path)) == ["n01440764 tench", "not a synset line"]


def test_jpeg_and_netpbm_spellings_are_scanned(tmp_path):
    for name in ("a.jfif", "b.jpe", "c.pbm", "d.pnm", "e.txt"):
        Image.new("RGB", (8, 8)).save(tmp_path / name, format="JPEG" if name[-1] in "fe" else "PPM")
    assert [p.name for p in vizkit.data.image_list(tmp_path).paths] == ["a.jfif", "b.jpe", "c.pbm", "d.pnm"]


def test_a_wnid_target_from_the_cli(squeezenet, tmp_path):
    needs_shared(LABELS)

    argv = ["run", "occlusion", "--model", "torchvision:squeezenet1_0", "--weights", str(SQUEEZENET_WEIGHTS)]
    argv += ["--labels", str(LABELS), "--image", str(sample("Pomeranian")), "--target", "n02112018"]
    assert main([*argv, "--stride", "88", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    document, _ = vizkit.load_result(tmp_path / "o")
    assert document["target"] == [259] and document["target_name"] == ["Pomeranian"]
    assert main([*argv[:-1], "crane", "--stride", "88", "--out", str(tmp_path / "c"), "--quiet"]) == 2


@pytest.mark.parametrize("analysis,options", [("deconvnet", {"layer": "conv5"}), ("occlusion", {}), ("filters", {})])
def test_nan_weights_are_refused_naming_the_tensor(analysis, options, photo_path):
    model = vizkit.load_model("zfnet-compact")
    with torch.no_grad():
        model.conv2.conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(vizkit.UsageError, match=r"parameter 'conv2.conv.weight' has 1 NaN or infinite values"):
        vizkit.run(analysis, model, images=[photo_path], **options)
    assert all(count == 0 for count in vizkit.engine.hook_counts(model).values())


def test_nan_input_tensors_are_refused(bundled_model):
    x = torch.zeros(1, 3, 144, 144)
    x[0, 0, 0, 0] = float("inf")
    with pytest.raises(vizkit.UsageError, match="input images contain NaN"):
        vizkit.run("deconvnet", bundled_model, images=x, layer="conv5")
