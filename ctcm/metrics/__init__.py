"""FID and KID to the reference protocol (TF-Inception 2015-12-05 pool3; see docs/fid.md).

    from ctcm.metrics import fid, FIDEvaluator
    fid("samples/", "ref_stats.npz")                       # folders, zips, .npz images or statistics
    ev = FIDEvaluator("embedded", num_samples=2000)
    ev.evaluate(model, steps=1, seed=0)
"""

from .distances import frechet_distance, kid_from_features
from .evaluate import FIDEvaluator, fid, kid
from .inception_score import InceptionLogits, find_logit_weights, inception_score
from .network import WEIGHTS_SHA1, FeatureNetworkError, InceptionFeatures, find_weights, preprocess
from .stats import (Statistics, cache_path, compute_statistics, is_statistics_file, load_or_compute_statistics,
                    statistics_from_features)

__all__ = ["FIDEvaluator", "FeatureNetworkError", "InceptionFeatures", "InceptionLogits", "find_logit_weights",
           "inception_score", "Statistics", "WEIGHTS_SHA1", "cache_path",
           "compute_statistics", "fid", "find_weights", "frechet_distance", "is_statistics_file", "kid",
           "kid_from_features", "load_or_compute_statistics", "preprocess", "statistics_from_features"]
