"""Every choice list and fixed default of birdsed, written once: the CLI lists them without importing the
modules that own them (named beside each)."""

OUTPUT_KINDS = ("segmentwise", "att", "clipwise")  # the model's three outputs (README: choosing the output)
DEFAULT_OUTPUT = "segmentwise"  # the output predict decides on until `tune` stores another in model.json
# the reference solution's thresholds per output (README: the reference recipe), before any tuning
REFERENCE_THRESHOLDS = {"segmentwise": 0.9, "att": 0.15, "clipwise": 0.5}
COMPRESSIONS = ("db", "pcen")  # model/frontend.py
SHORT_POLICIES = ("loop", "pad")  # data/dataset.py, model/windows.py
FREQ_POOLS = ("mean", "max", "meanmax", "flat")  # model/sed.py
# model.backbone: the CNNs of model/sed.py's BACKBONES (a test keeps the two lists equal), and birdnet (embedhead.py);
# config checks a name here without importing the network
CNN_BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "densenet121",
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "mobilenetv3_small_100",
    "resnet10t",
)
BACKBONES = (*CNN_BACKBONES, "birdnet")
POOLINGS = ("window", "segment")  # infer/loop.py: a row's score from whole windows, or from the head's segments
PRECISIONS = ("auto", "fp32", "bf16")  # device.py
DEVICES = ("auto", "cpu", "cuda")  # device.py
BACKENDS = ("torch", "onnx", "openvino")  # infer/predict.py, model/export.py
OUTPUT_FORMATS = ("csv", "kaggle", "raven", "raven-all", "audacity")  # infer/outputs.py
SMOOTHINGS = ("sum", "max")  # infer/decide.py
SPECIES_NAMES = ("code", "common", "scientific")  # predict --names: what Raven's Species column shows (model/names.py)
# predict --window-s / --hop-s (infer/predict.py): a window up to a minute (the models train on 3 to 5 s; 1e9 s tried
# to allocate 116 TiB), a hop of at least 50 ms (20 windows a second; 0.0001 s kept a 7 s file busy for minutes)
MIN_WINDOW_S, MAX_WINDOW_S, MIN_HOP_S = 0.5, 60.0, 0.05
MAX_SHARDS = 100_000  # predict --shard I/N (infer/shard.py): N beyond any job array (1/99999999999 ate the memory)
DATA_FORMATS = ("auto", "cornell", "birdclef", "labels")  # data/manifest.py
# predict --prior (infer/prior.py): BirdNET's place-and-season occurrence as a prior on the scores; off unless asked
PRIORS = ("off", "soft", "filter")
DEFAULT_PRIOR_WEIGHT = 0.5  # soft: logit + weight * log(occurrence) (model/birdnet_range.py soft_prior)
MAX_PRIOR_WEIGHT = 10.0  # 10 x log(1e-3), the floor: 69 logits, every unlikely score 0 already
DEFAULT_MIN_OCCURRENCE = 0.03  # filter, and BirdNET's species lists: BirdNET-Analyzer's sf_thresh
TRUTH_FORMATS = ("auto", "raven", "audacity", "table", "cornell2020", "birdclef2021")  # truth/, kaggle/truth.py
DEFAULT_MIN_OVERLAP_S = 0.05  # truth/events.py: a row is positive for a label its calls cover this long
REPORT_MIN_PAGE_S = 1.0  # evaluate/report.py: the shortest page of a recording drawn as one picture
REPORT_MAX_MINUTES = 60.0  # evaluate/report.py: the most minutes of a recording read and drawn
REPORT_MAX_PICTURES = 200  # evaluate/report.py: the most recording pictures one report draws (then it says so)
COMPETITIONS = ("birdclef2021", "birdclef2023", "birdclef2024", "birdclef2025")  # kaggle/birdclef.py
