"""Run bad and unusual inputs through the real ``vizkit`` command line and print what happened.

    .venv/bin/python scripts/bad_inputs.py [--jobs N] [--only SUBSTRING] [--keep DIR]

Each case runs ``python -m vizkit ...`` in a subprocess, in a temporary folder of its own where
its files were generated (images with EXIF rotation, 16-bit, 32-bit int and float, transparency,
palettes; truncated, empty and mislabelled files; NaN and foreign weights, a pickle that would
run code; labels of the wrong length, ambiguous names, wnids; a tiny model whose layer overflows,
one with a map that never fires; every invalid option; SIGTERM in the middle of a scan, ...), on
the bundled ``zfnet-compact`` or a tiny model written to a temporary ``.py`` + ``.pt``. Nothing
from ``../shared`` is read.

It prints a markdown table: input | command | exit code | first line of stderr | files the run
left in its folder (new or rewritten) | expected exit code (a mismatch is marked). Exit status: 0
when every case ended as expected, 1 otherwise. About 2-3 minutes on 2 CPU cores (each case pays
Python's and torch's start-up, about 2.5 s of CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vizkit

HERE = Path(__file__).resolve().parent
MODEL = "zfnet-compact"
TIMEOUT = 150

TINY_SOURCE = textwrap.dedent(
    """
    from torch import nn
    import vizkit


    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 3))
            self.vizkit_info = vizkit.models.ModelInfo(preprocess=vizkit.Preprocess(resize=36, crop=32))

        def forward(self, x):
            return self.classifier(self.features(x))


    def tiny():
        return Tiny()


    def broken():
        raise RuntimeError("the factory itself fails")
    """
)


# ------------------------------------------------------------------------------------ files
def photo(path: Path, size: tuple[int, int] = (200, 160), seed: int = 0) -> Path:
    """A smooth colour image with some texture (not a photograph, but not flat either)."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [128 + 100 * np.sin(x / 13 + seed), 128 + 100 * np.cos(y / 17), 128 + 60 * np.sin((x + y) / 9)], axis=-1
    )
    pixels += rng.normal(0, 12, pixels.shape)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    Image.open(photo(path.with_suffix(".tmp.png"))).save(path, exif=exif, quality=90)
    path.with_suffix(".tmp.png").unlink()


def sixteen_bit(path: Path) -> None:
    Image.fromarray(np.linspace(0, 65535, 160 * 200).reshape(160, 200).astype(np.uint16)).save(path)


def int32_tiff(path: Path) -> None:
    Image.fromarray((np.arange(160 * 200).reshape(160, 200) * 1000).astype(np.int32)).save(path)


def float_tiff(path: Path) -> None:
    Image.fromarray(np.linspace(-1, 3, 160 * 200, dtype=np.float32).reshape(160, 200)).save(path)


def rgba_over_black(path: Path) -> None:
    rgba = np.zeros((160, 200, 4), np.uint8)  # black under full transparency
    rgba[40:120, 50:150] = (200, 30, 30, 255)
    rgba[60:100, 80:120, 3] = 100  # half-transparent red
    Image.fromarray(rgba, "RGBA").save(path)


def palette_transparent(path: Path) -> None:
    image = Image.open(photo(path.with_suffix(".tmp.png"))).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 0
    image.save(path, transparency=0)
    path.with_suffix(".tmp.png").unlink()


def truncated_jpeg(path: Path) -> None:
    photo(path.with_suffix(".tmp.jpg"))
    data = path.with_suffix(".tmp.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    path.with_suffix(".tmp.jpg").unlink()


def state_dict(spec: str = MODEL) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in vizkit.load_model(spec).state_dict().items()}


class RunsCode:
    """Unpickling this runs ``touch PWNED`` in the case folder."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def tiny_files(folder: Path, change: Callable[[dict[str, torch.Tensor]], None] | None = None) -> None:
    """``tiny.py`` (the factory) and ``tiny.pt`` (its weights, changed by ``change``)."""
    (folder / "tiny.py").write_text(TINY_SOURCE)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(TINY_SOURCE, "tiny.py", "exec"), namespace)
    weights = namespace["tiny"]().state_dict()
    if change is not None:
        change(weights)
    torch.save(weights, folder / "tiny.pt")


def overflowing(weights: dict[str, torch.Tensor]) -> None:
    weights["features.3.weight"].fill_(1e38)  # finite, but conv sums overflow to inf


def dead_map(weights: dict[str, torch.Tensor]) -> None:
    weights["features.0.bias"][0] = -1e3  # map 0 of features.0 never passes its ReLU


# ------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    input: str  # what is unusual, in words
    argv: list[str]  # after `vizkit`; paths relative to the case folder
    expect: int  # the exit code a careful user would expect
    setup: Callable[[Path], None] = lambda folder: None
    before: list[str] | None = None  # a command to run first (e.g. to make a result to overwrite)
    sigterm_after: float | None = None  # seconds after start (of the command proper) to send SIGTERM
    result: dict = field(default_factory=dict)


def images(*names: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        for i, name in enumerate(names):
            photo(folder / name, seed=i)

    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        for step in setups:
            step(folder)

    return setup


def file_with(name: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda folder: make(folder / name)


def text_file(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


def folder_of(name: str, count: int, size: tuple[int, int] = (200, 160)) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / name).mkdir()
        for i in range(count):
            photo(folder / name / f"{i:04d}.jpg", size, seed=i)

    return setup


def deconv(*extra: str, image: str = "photo.png") -> list[str]:
    return [
        "run",
        "deconvnet",
        "--model",
        MODEL,
        "--image",
        image,
        "--layer",
        "conv5",
        "--top",
        "2",
        "--out",
        "out",
        *extra,
    ]


def occlusion(*extra: str, image: str = "photo.png") -> list[str]:
    return [
        "run",
        "occlusion",
        "--model",
        MODEL,
        "--image",
        image,
        "--size",
        "48",
        "--stride",
        "24",
        "--out",
        "out",
        *extra,
    ]


def top9(*extra: str, data: str = "photos") -> list[str]:
    base = ["run", "top9", "--model", MODEL, "--data", data, "--layer", "conv5", "--channels", "0-3"]
    return [*base, "--workers", "0", "--out", "out", *extra]


PHOTO = images("photo.png")
PHOTOS = folder_of("photos", 4)


def nan_weights(folder: Path) -> None:
    weights = state_dict()
    first = next(k for k in weights if k.endswith("weight"))
    weights[first][0, 0, 0, 0] = float("nan")
    torch.save(weights, folder / "nan.pt")


def labels_of(count: int, duplicate: str | None = None, wnids: bool = False) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        names = [f"class {i}" for i in range(count)]
        if duplicate:
            names[1] = names[2] = duplicate
        lines = [f"n0{i:07d}\t{name}" for i, name in enumerate(names)] if wnids else names
        (folder / "labels.txt").write_text("\n".join(lines) + "\n")

    return setup


def inf_tensor(folder: Path) -> None:
    torch.save(torch.full((1, 3, 144, 144), float("inf")), folder / "input.pt")


def pickle_code(folder: Path) -> None:
    (folder / "evil.pt").write_bytes(pickle.dumps({"conv1.conv.weight": RunsCode()}))


def cases() -> list[Case]:
    tiny = ["--model", "tiny.py:tiny", "--weights", "tiny.pt"]
    return [
        # ---------------------------------------------------------------- unusual image files
        Case("EXIF-rotated JPEG (orientation 6)", deconv(image="phone.jpg"), 0, file_with("phone.jpg", exif_rotated)),
        Case("16-bit greyscale PNG", deconv(image="depth.png"), 0, file_with("depth.png", sixteen_bit)),
        Case("32-bit integer TIFF", deconv(image="i32.tiff"), 0, file_with("i32.tiff", int32_tiff)),
        Case("32-bit float TIFF", deconv(image="f32.tiff"), 0, file_with("f32.tiff", float_tiff)),
        Case("RGBA, transparent pixels black", deconv(image="alpha.png"), 0, file_with("alpha.png", rgba_over_black)),
        Case("palette PNG with transparency", deconv(image="pal.png"), 0, file_with("pal.png", palette_transparent)),
        Case("truncated JPEG", deconv(image="cut.jpg"), 2, file_with("cut.jpg", truncated_jpeg)),
        Case("zero-byte .jpg", deconv(image="empty.jpg"), 2, file_with("empty.jpg", lambda p: p.write_bytes(b""))),
        Case("text file named .png", deconv(image="text.png"), 2, text_file("text.png", "not an image\n")),
        Case("a torch tensor file (inf) as --image", deconv(image="input.pt"), 2, inf_tensor),
        Case("missing --image", deconv(image="nope.jpg"), 2),
        Case(
            "--data: one unreadable file among good ones",
            top9(),
            0,
            both(PHOTOS, text_file("photos/zz-broken.png", "not an image\n")),
        ),
        Case(
            "--data: that folder with --strict",
            top9("--strict"),
            2,
            both(PHOTOS, text_file("photos/zz-broken.png", "not an image\n")),
        ),
        Case("--data a single image file", top9(data="photo.png"), 2, PHOTO),
        # ---------------------------------------------------------------- models and weights
        Case(
            "unknown model",
            [
                "run",
                "deconvnet",
                "--model",
                "zfnet-compactt",
                "--image",
                "photo.png",
                "--layer",
                "conv5",
                "--out",
                "out",
            ],
            2,
            PHOTO,
        ),
        Case(
            "factory file that raises",
            [
                "run",
                "deconvnet",
                "--model",
                "tiny.py:broken",
                "--image",
                "photo.png",
                "--layer",
                "features.3",
                "--out",
                "out",
            ],
            1,  # the user's own code failed while running: a run failure, not a bad value
            both(PHOTO, lambda f: tiny_files(f)),
        ),
        Case("NaN in the weights", deconv("--weights", "nan.pt"), 2, both(PHOTO, nan_weights)),
        Case("--weights a text file", deconv("--weights", "w.pt"), 2, both(PHOTO, text_file("w.pt", "weights\n"))),
        Case(
            "--weights zero bytes",
            deconv("--weights", "w.pt"),
            2,
            both(PHOTO, file_with("w.pt", lambda p: p.write_bytes(b""))),
        ),
        Case(
            "--weights of another architecture", deconv("--weights", "tiny.pt"), 2, both(PHOTO, lambda f: tiny_files(f))
        ),
        Case(
            "pickle that would run code (no --trust-weights)",
            deconv("--weights", "evil.pt"),
            2,
            both(PHOTO, pickle_code),
        ),
        Case(
            "tiny model whose layer overflows (finite weights)",
            ["run", "occlusion", *tiny, "--image", "photo.png", "--size", "8", "--stride", "8", "--out", "out"],
            1,
            both(PHOTO, lambda f: tiny_files(f, overflowing)),
        ),
        Case(
            "tiny model, a map that never fires (top9)",
            [
                "run",
                "top9",
                *tiny,
                "--data",
                "photos",
                "--layer",
                "features.1",
                "--channels",
                "0-2",
                "--patch-size",
                "16",
                "--workers",
                "0",
                "--out",
                "out",
            ],
            0,
            both(PHOTOS, lambda f: tiny_files(f, dead_map)),
        ),
        # ---------------------------------------------------------------- labels and targets
        Case(
            "labels of the wrong length (3 for 10 classes)",
            occlusion("--labels", "labels.txt"),
            2,
            both(PHOTO, labels_of(3)),
        ),
        Case(
            "ambiguous --target name",
            occlusion("--labels", "labels.txt", "--target", "crane"),
            2,
            both(PHOTO, labels_of(10, duplicate="crane")),
        ),
        Case(
            "--target as a wnid",
            occlusion("--labels", "labels.txt", "--target", "n00000003"),
            0,
            both(PHOTO, labels_of(10, wnids=True)),
        ),
        # ---------------------------------------------------------------- results
        Case("rerun into a result without --overwrite", deconv(), 2, PHOTO, before=deconv()),
        Case("rerun with --overwrite", deconv("--overwrite"), 0, PHOTO, before=deconv()),
        Case("top9 with fewer images than --k", top9("--k", "9"), 0, PHOTOS),
        Case("--out under a file", deconv("--out", "a-file/out"), 2, both(PHOTO, text_file("a-file", "x\n"))),
        Case(
            "SIGTERM in the middle of a top9 scan",
            top9("--batch-size", "2", "--checkpoint-every", "1", data="many"),
            130,
            folder_of("many", 300, (96, 96)),
            sigterm_after=3.0,
        ),
        # ---------------------------------------------------------------- invalid options
        Case("--workers -1", top9("--workers", "-1"), 2, PHOTOS),
        Case("--maps-per-page 0", top9("--maps-per-page", "0"), 2, PHOTOS),
        Case("--k 10**9", top9("--k", str(10**9)), 2, PHOTOS),
        Case("--std 0,0,0", deconv("--std", "0,0,0"), 2, PHOTO),
        Case("--std 1e-45,1,1 (0 in float32)", deconv("--std", "1e-45,1,1"), 2, PHOTO),
        Case("--mean 3e38,0,0 (the input overflows)", deconv("--mean", "3e38,0,0"), 2, PHOTO),
        Case("--crop 400 (larger than --resize)", deconv("--crop", "400"), 2, PHOTO),
        Case("--resize 400 --crop 400 (fixed-size model)", deconv("--resize", "400", "--crop", "400"), 2, PHOTO),
        Case("--resize 10**6", deconv("--resize", str(10**6)), 2, PHOTO),
        Case("--seed -1", deconv("--seed", "-1"), 2, PHOTO),
        Case("--device cuda:7", deconv("--device", "cuda:7"), 2, PHOTO),
        Case("--tau nan (occlusion)", occlusion("--tau", "nan"), 2, PHOTO),
        Case(
            "--steps 10**9 (invariance)",
            [
                "run",
                "invariance",
                "--model",
                MODEL,
                "--image",
                "photo.png",
                "--layers",
                "conv5",
                "--steps",
                str(10**9),
                "--out",
                "out",
            ],
            2,
            PHOTO,
        ),
        # ---------------------------------------------------------------- commands
        Case("unknown analysis", ["run", "occlusoin", "--model", MODEL, "--image", "photo.png"], 2, PHOTO),
        Case("misspelt option (--layr)", deconv("--layr", "conv5"), 2, PHOTO),
    ]


# ------------------------------------------------------------------------------------ running
def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIZKIT_")}
    env.update(
        VIZKIT_SHARED=str(folder / "no-shared"),  # nothing from ../shared
        VIZKIT_CACHE=str(folder / ".cache"),
        MPLBACKEND="Agg",
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="2",
    )
    return env


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` (but the cache) with its size and modification time."""
    found = {}
    for path in folder.rglob("*"):
        if (path.is_file() or path.is_symlink()) and ".cache" not in path.relative_to(folder).parts:
            stat = path.lstat()
            found[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return found


def _vizkit(argv: list[str], folder: Path, sigterm_after: float | None = None) -> tuple[int, str]:
    command = [sys.executable, "-m", "vizkit", *argv]
    if sigterm_after is None:
        done = subprocess.run(command, cwd=folder, env=_env(folder), capture_output=True, text=True, timeout=TIMEOUT)
        return done.returncode, done.stderr
    process = subprocess.Popen(command, cwd=folder, env=_env(folder), stderr=subprocess.PIPE, text=True)
    # the scan has started once it wrote its first checkpoint; then let it run a little before stopping it
    deadline = time.monotonic() + TIMEOUT
    while not list(folder.glob("out/.top9-scan*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(sigterm_after)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, err


def run_case(case: Case, root: Path, number: int) -> Case:
    folder = root / f"case{number:02d}"
    folder.mkdir()
    started = time.perf_counter()
    try:
        case.setup(folder)
        if case.before:
            _vizkit(case.before, folder)
        existing = _files(folder)
        code, err = _vizkit(case.argv, folder, case.sigterm_after)
        left = sorted(path for path, state in _files(folder).items() if existing.get(path) != state)  # new or rewritten
    except subprocess.TimeoutExpired:
        code, err, left = -1, f"(no exit after {TIMEOUT} s)", []
    lines = [line for line in err.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if first.startswith("Usage: ") and lines[-1].startswith("Error: "):  # click's usage error: its reason
        first = f"Usage: … {lines[-1]}"
    case.result = {
        "code": code,
        "first": first,
        "lines": len(lines),
        "traceback": "Traceback" in err,
        "left": left,
        "seconds": time.perf_counter() - started,
    }
    return case


def _cell(text: str, limit: int = 230) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")


def _left(paths: list[str]) -> str:
    if not paths:
        return "none"
    outputs = [p for p in paths if p.startswith("out/")]
    named = [p for p in paths if not p.startswith("out/")] + [p for p in outputs if not p.endswith(".png")]
    pngs = len(outputs) - len([p for p in outputs if not p.endswith(".png")])
    return ", ".join(named + ([f"{pngs} PNG(s) in out/"] if pngs else []))


def table(cases: list[Case]) -> str:
    rows = [
        "| input | command | exit code | first line of stderr | result files left | expected |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for case in cases:
        r = case.result
        mark = "" if r["code"] == case.expect else " ✗"
        first = r["first"] + (f" (+{r['lines'] - 1} more lines)" if r["lines"] > 1 else "")
        first += " **Traceback**" if r["traceback"] else ""
        command = "vizkit " + shlex.join(case.argv)
        if case.sigterm_after is not None:
            command += f"  (SIGTERM {case.sigterm_after:g} s into the scan)"
        if case.before:
            command = f"(after `vizkit {shlex.join(case.before)}`) {command}"
        rows.append(
            f"| {_cell(case.input)} | `{_cell(command, 400)}` | {r['code']} | {_cell(first)} | "
            f"{_cell(_left(r['left']), 300)} | {case.expect}{mark} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3, help="cases run at once (default 3)")
    parser.add_argument("--only", help="only the cases whose input text contains this")
    parser.add_argument("--keep", type=Path, help="keep the case folders here (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    chosen = [c for c in cases() if not args.only or args.only.lower() in c.input.lower()]
    root = Path(tempfile.mkdtemp(prefix="vizkit-bad-inputs-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            done = list(pool.map(lambda item: run_case(item[1], root, item[0]), enumerate(chosen)))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(table(done))
    wrong = [c for c in done if c.result["code"] != c.expect or c.result["traceback"]]
    print(
        f"\n{len(done)} cases in {time.perf_counter() - started:.0f} s; "
        f"{len(done) - len(wrong)} as expected, {len(wrong)} not"
        + (f": {', '.join(c.input for c in wrong)}" if wrong else "")
    )
    if args.json:
        args.json.write_text(json.dumps([{"input": c.input, "argv": c.argv, **c.result} for c in done], indent=2))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
