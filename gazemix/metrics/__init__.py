"""Metrics: saliency metrics (:mod:`gazemix.metrics.saliency`, re-exported here) and label-gaze consistency
(:mod:`gazemix.metrics.consistency`)."""

from gazemix.metrics.saliency import (MATLAB_EPS, auc_borji, auc_judd, auc_shuffled, auc_uniform, cc, info_gain,
                                      kld, nss, sim)

__all__ = ["MATLAB_EPS", "auc_borji", "auc_judd", "auc_shuffled", "auc_uniform", "cc", "info_gain", "kld", "nss",
           "sim"]
