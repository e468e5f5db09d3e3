"""Model registry, cache and runtime."""

from facelens.models.registry import REGISTRY, ModelEntry, get_model, list_models, threshold_for
from facelens.models.store import is_installed, model_path, pull

__all__ = ["REGISTRY", "ModelEntry", "get_model", "is_installed", "list_models", "model_path", "pull",
           "threshold_for"]
