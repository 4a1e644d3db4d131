"""Metrics: saliency metrics (:mod:`gazemix.metrics.saliency`) and label-gaze consistency
(:mod:`gazemix.metrics.consistency`), both re-exported here."""

from gazemix.metrics.consistency import (bootstrap_interval, cluster_bootstrap, disagreement, gaze_weight, ghost_label, label_gaze_gap,
                                         pasted_region_shares, source_shares_gap)
from gazemix.metrics.saliency import (MATLAB_EPS, auc_borji, auc_judd, auc_shuffled, auc_uniform, cc, info_gain,
                                      kld, nss, sim)

__all__ = ["MATLAB_EPS", "auc_borji", "auc_judd", "auc_shuffled", "auc_uniform", "bootstrap_interval", "cc", "cluster_bootstrap",
           "disagreement", "gaze_weight", "ghost_label", "info_gain", "kld", "label_gaze_gap", "nss",
           "pasted_region_shares", "sim", "source_shares_gap"]
