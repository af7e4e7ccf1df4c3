"""birdsed's own exception types: every error a user can cause is one of these."""


class BirdsedError(Exception):
    """Base class of every error birdsed raises on purpose."""


class AudioDecodeError(BirdsedError):
    """An audio file is missing, empty, truncated, corrupt, unsupported or holds NaN/Inf."""


class ManifestError(BirdsedError):
    """A data-set table is malformed or a data-set folder has an unknown layout."""


class StoreError(BirdsedError):
    """A prepared audio store is missing, incomplete or asked for something it lacks."""


class ConfigError(BirdsedError):
    """A configuration value or override is invalid."""


class ModelError(BirdsedError):
    """A model directory or weight file is missing, malformed or does not fit."""


class TruthError(BirdsedError):
    """An annotation or truth table is malformed, or names times, files or labels it cannot hold."""


class RunLocked(BirdsedError):
    """A folder is held by another birdsed run (fsutil.run_lock)."""


class ReviewError(BirdsedError):
    """A predict folder cannot be reviewed, a verdict table is malformed, or a request names what PRED lacks."""


class LearnError(BirdsedError):
    """Verdicts that cannot make a classifier, or an embedding DB or learn folder that does not fit the round asked."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C's KeyboardInterrupt is (cli.main installs the handler), so that
    whatever stops cleanly on Ctrl-C (Lightning's fit, predict's parts) stops the same way; exit status 143."""
