"""Training configuration: one dataclass, and the presets that fill it.

A preset is a complete recipe; command-line flags override single fields of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = "digits"  # digits | mnist | cifar10 | cifar100 | imagefolder
    data_dir: str | None = None  # folder with the dataset's standard files (not for digits)
    image_size: int | None = None  # imagefolder only: images are resized to this square
    color: str | None = None  # imagefolder only: "L" or "RGB"
    val_size: int = 200  # examples held out of train for calibration and thresholds
    val_seed: int | None = None  # which examples (None: the run's seed); fix it across the
    # members of a deep ensemble so that their common validation split is held out of all
    # network
    arch: str = "cnn"  # cnn | resnet18 | wrn
    width: float = 1.0  # channel multiplier (WRN: the k of WRN-d-k)
    depth: int = 28  # WRN only, 6n+4
    # MIMO
    ensemble_size: int = 3  # M: input slots and heads; 1 is an ordinary network
    input_repetition: float = 0.0  # rho: fraction of rows shared by all heads
    batch_repetition: int = 2  # r: each unique example appears r times per step
    # optimisation
    batch_size: int = 128  # unique examples per step (the step holds batch_size * r rows)
    epochs: int = 12
    max_steps: int | None = None  # stop early after this many steps (tests, smoke runs)
    optimizer: str = "adamw"  # adamw | sgd (Nesterov, momentum 0.9)
    lr: float = 3e-3  # per 128 unique examples; scaled linearly with batch_size
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | step
    warmup_epochs: float = 1.0  # step schedule: linear warm-up length
    lr_decay_epochs: tuple[int, ...] = ()  # step schedule: epochs where lr is multiplied ...
    lr_decay_factor: float = 0.2  # ... by this
    label_smoothing: float = 0.0
    # augmentation, applied to the unique examples before the MIMO gather
    augment: str = "shift"  # none | shift (+-shift px) | crop_flip (pad 4, crop, h-flip)
    shift: int = 2
    # outlier loss on synthetic non-images (training.ood's training families)
    outlier_weight: float = 0.0  # 0 disables; the loss is weight * the outlier loss below
    outlier_fraction: float = 0.125  # outliers per step, as a fraction of the step's rows
    # agreement: P(two heads agree), pushed down (needs M >= 2); uniform: each head's
    # cross-entropy to the uniform distribution, outlier exposure (Hendrycks et al., 2019)
    outlier_loss: str = "agreement"
    # comma-separated, taking turns by step: smooth_noise (training.ood), pen_strokes
    # (letters, symbols and doodles drawn as on the web page: training.strokes)
    outlier_families: str = "smooth_noise"
    # digits drawn as on the web page (training.strokes.TRAIN_DIGITS, labelled), as a fraction
    # of each step's unique examples added to them: the page's pen is then no stranger
    drawn_digit_fraction: float = 0.0
    # run
    precision: str = "auto"  # auto (fp32 on CPU, bf16/fp16 on CUDA) | bf16 | fp16 | fp32
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    threads: int | None = None  # torch intra-op threads per process (None: cores / processes)
    out_dir: str = "runs/default"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in the checkpoint

    @property
    def split_seed(self) -> int:
        return self.seed if self.val_seed is None else self.val_seed


PRESETS: dict[str, TrainConfig] = {
    # Seconds on a laptop: the 8x8 sklearn digits, for tests and smoke runs.
    "digits": TrainConfig(
        dataset="digits", val_size=200, batch_size=64, epochs=8, lr=3e-3, shift=1
    ),
    # The fast MNIST recipe measured on a 2-core CPU: ~10 minutes with bf16 autocast.
    "mnist": TrainConfig(
        dataset="mnist",
        val_size=5000,
        batch_size=128,
        batch_repetition=2,
        epochs=12,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=5e-4,
        schedule="onecycle",
        augment="shift",
        shift=2,
    ),
    # The paper's CIFAR recipe (uncertainty-baselines cifar/mimo.py, WRN-28-10).
    "cifar10": TrainConfig(
        dataset="cifar10",
        val_size=5000,
        arch="wrn",
        depth=28,
        width=10.0,
        ensemble_size=3,
        input_repetition=0.0,
        batch_repetition=4,
        batch_size=128,
        epochs=250,
        optimizer="sgd",
        lr=0.1,
        weight_decay=3e-4,
        schedule="step",
        warmup_epochs=1.0,
        lr_decay_epochs=(100, 200, 225),
        lr_decay_factor=0.2,
        augment="crop_flip",
    ),
}
PRESETS["cifar100"] = replace(PRESETS["cifar10"], dataset="cifar100")


def with_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy with the given fields replaced; None values are ignored (flag not given)."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}")
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
