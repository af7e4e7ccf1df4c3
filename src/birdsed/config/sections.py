"""One dataclass per stage: front end, model, data, augmentations, training; and the whole Config with the checks
that span sections."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from birdsed import SAMPLE_RATE_HZ
from birdsed.config.checks import check_frontend, check_image, check_run
from birdsed.config.choices import BACKBONES, COMPRESSIONS
from birdsed.errors import ConfigError


@dataclass
class FrontendConfig:
    """Log-mel front end (PANNs / the reference: 32 kHz, 1024-point FFT, 10 ms hop)."""

    sample_rate_hz: int = SAMPLE_RATE_HZ
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 128
    fmin_hz: float = 50.0
    fmax_hz: float = 14_000.0
    top_db: float | None = 80.0  # compression "db" only
    compression: str = "db"  # "db": log-mel in dB; "pcen": per-channel energy normalisation (librosa.pcen)
    pcen_time_constant_s: float = 0.4  # PCEN's smoother (librosa's defaults throughout)
    pcen_gain: float = 0.98
    pcen_bias: float = 2.0
    pcen_power: float = 0.5

    def check(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"frontend.compression {self.compression!r}: valid: {list(COMPRESSIONS)}")
        if not self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2:
            raise ConfigError(
                f"frontend needs fmin_hz < fmax_hz <= sample_rate_hz / 2 (Nyquist), got fmin_hz "
                f"{self.fmin_hz}, fmax_hz {self.fmax_hz}, sample_rate_hz {self.sample_rate_hz}"
            )
        check_frontend(self)


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    pretrained: bool | str = False  # True: timm's weights (online); a path: a local weight file
    in_chans: int = 0  # 0: 3 when pretrained (the mel image repeated), else 1
    dropout: float = 0.5
    drop_path: float = 0.0
    freq_scale: float = 1.0  # the log-mel image resized by these factors before the backbone (bilinear):
    time_scale: float = 1.0  # ImageNet CNNs see 64 mels as a 2-cell-high feature map
    freq_pool: str = "mean"  # how the head pools the feature map's frequency cells: mean (PANNs), max, meanmax,
    # or flat (every cell kept as its own channels: the head knows where in the spectrum a pattern lies)
    embed_hop_s: float = 1.0  # backbone birdnet: 3 s sub-windows of a crop every this many seconds (embedhead.py)
    birdnet_prior: bool = False  # backbone birdnet: classes BirdNET knows start from its own classifier (embedhead.py)
    freeze_backbone: bool = True  # backbone birdnet: false fine-tunes BirdNET itself under the head, from audio
    # (train/finetune.py) instead of training the head on cached embeddings


@dataclass
class DataConfig:
    crop_s: float = 5.0
    short_policy: str = "loop"  # clips shorter than a crop: "loop" or "pad"
    secondary_max_s: float = 40.0  # secondary labels count only for recordings shorter than this
    secondary_weight: float = 1.0  # their target value (2nd place: 0.3)
    balance: bool = True
    balance_max: int = 80  # classes above: keep the 80 shortest recordings
    balance_min: int = 60  # classes below: split long recordings into up to 60 items
    val_fraction: float = 0.1  # 0: no validation split (every recording trained on, the last epoch kept)
    val_windows: int = 4  # windows of crop_s scored per validation recording (max over them)
    split_seed: int | None = (
        None  # seed of the validation split (default: train.seed); fixed, ensemble members share it
    )
    subsample: float = 1.0  # below 1: train on this fraction of the training recordings, drawn per train.seed
    # (stratified by first label, every label kept): bagging, so that ensemble members see different clips
    embedding_cache: str | None = None  # backbone birdnet: folder of cached embeddings (default RUN/embeddings)
    embedding_views: int = 1  # backbone birdnet: >1 adds views - 1 augmented copies of each recording (embedtrain.py)
    allow_outside_paths: bool = False  # a table's file outside its audio folder is refused unless this is true
    pseudo: tuple[str, ...] = ()  # pseudo-label tables (birdsed pseudo-label) whose windows join training (pseudo.py)
    pseudo_items: float = (
        0.5  # pseudo-labelled windows per epoch, as a fraction of the labelled items (0: background only)
    )
    pseudo_weight: float = 1.0  # the loss weight of a pseudo-labelled window against a labelled crop's 1

    def val_split_seed(self, train_seed: int) -> int:
        return train_seed if self.split_seed is None else self.split_seed


@dataclass
class AugmentConfig:
    """Each augmentation has a probability (0 = off); all run on the device, in training only."""

    negatives_p: float = 0.0  # bird-free noise examples with all-zero targets
    gain_p: float = 0.5
    gain_db: float = 6.0
    noise_p: float = 0.0
    noise_snr_db: tuple[float, float] = (3.0, 30.0)
    lowpass_p: float = 0.0  # 2nd place: high frequencies fade with distance
    pitch_p: float = 0.3
    pitch_semitones: float = 2.0
    tempo_p: float = 0.3
    tempo_range: float = 0.15  # stretch factor in [1 - r, 1 + r]
    specaug_p: float = 0.5
    time_masks: int = 2
    time_mask_frames: int = 40
    freq_masks: int = 2
    freq_mask_bins: int = 12
    specaug_cut: bool = False  # train.backbone_cache: the masks on the cached activation's (freq, time) grid instead
    mixup_p: float = 0.5
    mixup_alpha: float = 0.4
    mixup_union: bool = False  # 3rd place: targets are the union (max) of the two label sets
    pseudo_mix_p: float = 0.0  # a labelled crop gets a pseudo-labelled window as its background; targets: the max


@dataclass
class TrainConfig:
    epochs: int = 30
    max_steps: int = -1  # 0 or -1: no limit (train.epochs decide)
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_frac: float = 0.05
    backbone_lr_scale: float = 0.03  # model.freeze_backbone false: BirdNET's weights learn at lr x this (NIPS4B best)
    backbone_train_from: float = 0.0  # model.freeze_backbone false: only BirdNET's layers from this depth (0-1) train
    backbone_cache: bool = False  # model.freeze_backbone false: cache the frozen layers' output, train the rest (CPU)
    head_warmup_epochs: int = 0  # LP-FT: the head first, on the frozen backbone (head_warmup.py; BirdNET: HeadFirst)
    head_warmup_lr: float = 1e-3
    head_warmup_views: int = 1  # >1: the warm-up cache also holds views - 1 augmented copies of each window
    freeze_bn: bool = False  # keep the backbone's BatchNorm statistics (pretrained ones) fixed while fine-tuning
    grad_clip: float = 1.0
    ema: bool = False  # keep an exponential moving average of the weights (every training path)
    ema_decay: float = 0.999
    framewise_loss_weight: float = 0.0  # 6th place: + w * BCE(max_t framewise)
    select_metric: str = "val_f1_clipwise"
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16-mixed on CUDA, 32 on CPU
    devices: int | str = 1
    num_nodes: int = 1  # machines of a multi-node run (Lightning reads the rest from SLURM or torchrun)
    strategy: str = "auto"
    limit_val_batches: float = 1.0


@dataclass
class Config:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Values no type says are wrong, refused (ConfigError naming the key) before `train` writes or prepares
        anything."""
        from birdsed.config.load import config_from_dict  # load.py builds Configs, so it imports this module

        config_from_dict(self.to_dict(), "config")  # every value's type, range and choices, as from YAML or --set
        self.frontend.check()
        f, m = self.frontend, self.model
        checks = [
            (
                m.backbone in BACKBONES,
                f"model.backbone {m.backbone!r}: valid: {sorted(BACKBONES)}",
            ),
            (
                m.backbone == "birdnet" or f.sample_rate_hz == SAMPLE_RATE_HZ,
                f"frontend.sample_rate_hz {f.sample_rate_hz}: the store holds audio at {SAMPLE_RATE_HZ} Hz, "
                f"so the front end must read it at {SAMPLE_RATE_HZ}",
            ),
            (
                m.backbone != "birdnet" or (m.embed_hop_s <= 3.0 and self.data.crop_s >= 3.0),
                f"backbone birdnet needs 0 < model.embed_hop_s <= 3 and data.crop_s >= 3, got {m.embed_hop_s}, "
                f"{self.data.crop_s}",
            ),
            (
                m.freeze_backbone or m.backbone == "birdnet",
                f"model.freeze_backbone false fine-tunes BirdNET's backbone under birdsed's head; model.backbone "
                f"{m.backbone!r} has no such backbone (a CNN trains whole): set model.backbone birdnet",
            ),
            (
                not m.birdnet_prior or m.backbone == "birdnet",
                f"model.birdnet_prior needs model.backbone birdnet, got {m.backbone!r}",
            ),
            (
                m.freeze_backbone
                or self.train.backbone_cache
                or (self.data.embedding_views == 1 and not self.data.pseudo),
                "model.freeze_backbone false trains from audio: data.embedding_views and data.pseudo apply to cached "
                "features only (the frozen head's embeddings, or train.backbone_cache's)",
            ),
            (
                not self.train.backbone_cache or (not m.freeze_backbone and self.train.backbone_train_from > 0),
                "train.backbone_cache caches BirdNET's frozen layers to train the layers after them: it needs "
                "model.freeze_backbone false and train.backbone_train_from > 0 (0.75: BirdNET's last stage trains)",
            ),
            (
                not self.augment.specaug_cut or self.train.backbone_cache,
                "augment.specaug_cut masks the activation cached at train.backbone_cache's cut; fine-tuning from audio "
                "masks BirdNET's spectrogram itself (augment.specaug_p): set train.backbone_cache=true, or leave "
                "augment.specaug_cut false",
            ),
            (
                m.backbone != "birdnet" or not self.train.freeze_bn,
                "train.freeze_bn applies to the CNNs: BirdNET's graph has its batch norms folded into the "
                "convolutions; with backbone birdnet leave it false",
            ),
            (
                m.backbone != "birdnet"
                or (
                    (self.train.head_warmup_epochs == 0 or not m.freeze_backbone) and self.train.head_warmup_views == 1
                ),
                "train.head_warmup_epochs with backbone birdnet trains the head alone first when BirdNET's layers "
                "train after it (model.freeze_backbone false); the frozen head has nothing to unfreeze, and "
                "train.head_warmup_views is the CNNs' (data.embedding_views augments BirdNET's cache)",
            ),
            (
                self.augment.lowpass_p <= 0 or f.compression == "db",
                f"augment.lowpass_p attenuates in dB; frontend.compression {f.compression!r} needs augment.lowpass_p=0",
            ),
            (
                m.backbone != "birdnet" or not self.augment.pseudo_mix_p,
                "augment.pseudo_mix_p mixes audio under the CNNs' crops; backbone birdnet takes pseudo-labelled "
                "windows as items of their own only (data.pseudo, data.pseudo_items)",
            ),
            (
                not self.augment.pseudo_mix_p or self.data.pseudo,
                "augment.pseudo_mix_p needs pseudo-label tables (data.pseudo)",
            ),
            (
                self.augment.noise_snr_db[0] <= self.augment.noise_snr_db[1],
                f"augment.noise_snr_db {list(self.augment.noise_snr_db)}: low above high",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if m.backbone != "birdnet":
            check_image(f, m, self.data.crop_s)
        check_run(self.train)
