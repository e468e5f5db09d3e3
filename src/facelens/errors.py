"""Errors a user can act on. Each carries a one-line message meant to be shown as it is."""


class FacelensError(Exception):
    """Base class: anything facelens raises on purpose."""


class ImageError(FacelensError):
    """An input could not be read as an image (missing, empty, corrupt, too large, unsupported)."""


class ModelNotFoundError(FacelensError):
    """A model is not in the local cache; the message names the pull command."""


class ModelIntegrityError(FacelensError):
    """A downloaded or cached file does not match its registry sha256."""


class NoFaceError(FacelensError):
    """An operation that needs a face found none."""


class ConfigError(FacelensError):
    """A bad parameter: unknown model name, out-of-range value, incompatible combination."""


class LicenceError(ConfigError):
    """A model the active profile may not open (the licence-clean profile and a non-commercial model)."""


class QualityError(FacelensError):
    """A face too poor for the operation asked (below a quality floor); the message says which part."""


class NotLiveError(FacelensError):
    """A face that passive liveness called a presentation attack (or could not decide), where a live
    person was required; the message gives the score and threshold."""


class NotFoundError(FacelensError):
    """A named thing (person, face, cluster, job) does not exist."""
