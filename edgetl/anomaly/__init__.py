"""Defect detection from good images only: anomaly statistics of frozen pretrained features (issue 13).

:mod:`.padim` fits per-position Gaussians (with a few kinds per position) to the features of good
images, in numpy; :mod:`.graph` builds the feature extractor and the scoring as one Keras graph.
"""

from .graph import TAP_STRIDES, anomaly_model, extract_features, feature_extractor, tap_layers
from .padim import PadimStats, fit_padim, image_scores, score_maps, with_synthetic_anomalies

__all__ = ["PadimStats", "TAP_STRIDES", "anomaly_model", "extract_features", "feature_extractor", "fit_padim",
           "image_scores", "score_maps", "tap_layers", "with_synthetic_anomalies"]
