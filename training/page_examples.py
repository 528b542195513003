"""The example images of the web page (service/static/examples/*.png), chosen by the model.

    python -m training.page_examples --data-dir ../shared/data/mnist

writes four 28x28 grayscale PNGs, light on dark like MNIST:

- `clear.png`: an MNIST test digit (of `--clear-label`) all heads agree on with near certainty,
- `ambiguous.png`: the MNIST test digit whose heads disagree most (their top classes differ
  and the mutual information is the highest of the test set),
- `noise.png`: uniform noise,
- `letter.png`: a capital letter (`--letter`) rendered with Pillow's default font.

The default model (`--model`) is run through ONNX Runtime exactly as the service runs it: the
image tiled into the M input slots, one forward pass. Nothing of the dataset but the two chosen
digits is written. Needs numpy, Pillow and onnxruntime only (no torch).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont

from service.uncertainty import EnsembleUncertainty, ensemble_uncertainty
from training.data import load_dataset
from training.files import write_atomic

ROOT = Path(__file__).resolve().parents[1]
# The MIMO model: the ambiguous example is one its heads split on (the page shows their votes).
DEFAULT_MODEL = ROOT / "models" / "mnist" / "1" / "model.onnx"
DEFAULT_OUT = ROOT / "service" / "static" / "examples"
SIZE = 28


class Model:
    """The ONNX model with the metadata the service reads: M, temperature, threshold."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.ensemble_size = int(meta["mimo.ensemble_size"])
        self.temperature = float(meta["mimo.temperature"])
        self.threshold = float(json.loads(meta["mimo.thresholds"])["mutual_information"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> EnsembleUncertainty:
        """uint8 [N, 28, 28] -> the ensemble's answer and uncertainty."""
        x = images.astype(np.float32)[:, None] / 255.0  # [N, 1, H, W] in [0, 1]
        logits = []
        for start in range(0, len(x), 1000):
            tiled = np.repeat(x[start : start + 1000, None], self.ensemble_size, axis=1)
            logits.append(self.session.run(None, {self.input: tiled})[0])
        return ensemble_uncertainty(np.concatenate(logits), self.temperature)


def pick_clear(u: EnsembleUncertainty, labels: np.ndarray, label: int) -> int:
    """The first test digit of `label` that every head calls right with probability > 0.999."""
    heads = u.member_probabilities.argmax(-1)  # [N, M]
    ok = (
        (labels == label)
        & (heads == label).all(axis=1)
        & (u.member_probabilities.max(-1) > 0.999).all(axis=1)
    )
    if not ok.any():
        raise SystemExit(f"no test digit {label} that every head is sure of")
    return int(np.flatnonzero(ok)[0])


def pick_ambiguous(u: EnsembleUncertainty) -> int:
    """The test digit with the highest mutual information among those whose heads' top
    classes differ."""
    heads = u.member_probabilities.argmax(-1)
    split = (heads != heads[:, :1]).any(axis=1)
    if not split.any():
        raise SystemExit("the heads agree on every test digit")
    candidates = np.flatnonzero(split)
    return int(candidates[np.argmax(u.mutual_information[candidates])])


def uniform_noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)


def letter_image(letter: str) -> np.ndarray:
    """A white capital on black, its longer side 20 px of 28 like an MNIST digit, centred."""
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=96)
    except (TypeError, OSError, ImportError):  # no FreeType: the small bitmap font
        font = ImageFont.load_default()
    big = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(big).text((64, 32), letter, fill=255, font=font)
    box = big.getbbox()
    if box is None:
        raise SystemExit(f"could not render {letter!r}")
    glyph = big.crop(box)
    scale = 20 / max(glyph.size)
    width, height = (max(1, round(d * scale)) for d in glyph.size)
    out = Image.new("L", (SIZE, SIZE), 0)
    out.paste(
        glyph.resize((width, height), Image.Resampling.LANCZOS),
        ((SIZE - width) // 2, (SIZE - height) // 2),
    )
    return np.asarray(out)


def describe(name: str, u: EnsembleUncertainty, threshold: float) -> str:
    heads = u.member_probabilities[0].argmax(-1).tolist()
    mi = float(u.mutual_information[0])
    verdict = "uncertain" if mi > threshold else "certain"
    return (
        f"{name:10s} ensemble {int(u.probabilities[0].argmax())} "
        f"({u.probabilities[0].max():.3f}), heads {heads}, MI {mi:.4f} "
        f"(threshold {threshold:.4f}): {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.page_examples",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="the MNIST IDX files")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--clear-label", type=int, default=7)
    parser.add_argument("--letter", default="E", help="a capital letter (default E)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    args = parser.parse_args(argv)

    model = Model(args.model)
    test = load_dataset("mnist", "test", args.data_dir)
    digits = test.images[:, 0]  # [N, 28, 28] uint8
    u = model(digits)
    clear = pick_clear(u, test.labels, args.clear_label)
    ambiguous = pick_ambiguous(u)
    images = {
        "clear": digits[clear],
        "ambiguous": digits[ambiguous],
        "noise": uniform_noise(args.seed),
        "letter": letter_image(args.letter),
    }
    print(f"clear: MNIST test #{clear} (label {test.labels[clear]})")
    print(f"ambiguous: MNIST test #{ambiguous} (label {test.labels[ambiguous]})")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, pixels in images.items():
        path = args.out / f"{name}.png"
        png = io.BytesIO()
        Image.fromarray(pixels, "L").save(png, format="PNG", optimize=True)
        write_atomic(path, png.getvalue())
        print(describe(name, model(pixels[None]), model.threshold), "->", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
