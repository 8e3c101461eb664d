"""``vizkit.toolkit``: what several analyses share, public for plugins written outside vizkit.

* dataset scans: :class:`RunningTopK` (the k strongest activations of every map, mergeable and
  resumable), :class:`UnitStatistics` (each unit's activity, histogram of maxima, class means and
  class selectivity, streamed, mergeable and resumable), :func:`project_winners` (their deconvnet projections and receptive-field patches),
  :func:`crop_to_box`;
* choosing what to look at: :func:`parse_layers`, :func:`parse_channel_spec`,
  :func:`select_channels`, :func:`default_layer` (the layer an analysis looks at when none is
  given);
* features and linear probes: :func:`extract_features` / :class:`CachedFeatures` (per-layer
  pooled features, cached on disk), :func:`parse_pool`, :func:`pool_features`,
  :class:`LinearProbe`, :class:`Standardizer`, :func:`fit_probe`, :func:`select_probe`,
  :data:`PROBE_GRID`, :func:`mean_class_accuracy`;
* long runs: :func:`progress_bar`, :class:`StopRequest`, :func:`deferred_interrupts`,
  :func:`sigterm_as_interrupt`, :class:`ProcessGroup`, :func:`is_main_process`,
  :func:`read_run_info`, :func:`write_run_info`, :func:`snapshot_paths`, :func:`cache_folder`,
  :class:`ResumeFolder` (what an interrupted run keeps for ``--resume``), :func:`resumable_scan`
  (one checkpointed, sharded pass over a data set), :func:`scan_checkpoint`,
  :func:`merge_skipped` (every process's unreadable files into rank 0's record);
* images: :func:`ssim`; :mod:`figures` (``vizkit.toolkit.figures``: :func:`~figures.new_figure`,
  :func:`~figures.show`, :func:`~figures.hwc`, :func:`~figures.tile_mosaic`,
  :func:`~figures.projections_beside_patches`, :func:`~figures.shorten` (a middle ellipsis at
  word boundaries), :func:`~figures.label_key` (class-label colours, colour-blind safe, with
  their legend), :func:`~figures.silent_panel` (a map that does not fire)), matplotlib only
  once it is used;
* report views: :mod:`report` (``vizkit.toolkit.report``: HTML helpers for an analysis's
  :class:`vizkit.ReportView`: :func:`~report.esc`, :func:`~report.render_value`,
  :func:`~report.per_image_table`, :func:`~report.mean_std`, ...);
* image classification with learned descriptors: :mod:`spm` (``vizkit.toolkit.spm``: Lazebnik et
  al.'s Spatial Pyramid Matching on any feature maps and the Caltech-101 protocol, shared by the
  unsupervised models' plugins; scikit-learn once it is used).
"""

from typing import TYPE_CHECKING

from vizkit._lazy import attach

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from vizkit.toolkit import figures, report, spm
    from vizkit.toolkit.cache import cache_folder
    from vizkit.toolkit.channels import parse_channel_spec, parse_layers, select_channels
    from vizkit.toolkit.distributed import ProcessGroup, is_main_process
    from vizkit.toolkit.features import CachedFeatures, extract_features, parse_pool, pool_features
    from vizkit.toolkit.interrupts import StopRequest, deferred_interrupts, sigterm_as_interrupt
    from vizkit.toolkit.layers import default_layer
    from vizkit.toolkit.linear import GRID as PROBE_GRID
    from vizkit.toolkit.linear import LinearProbe, Standardizer, fit_probe, mean_class_accuracy, select_probe
    from vizkit.toolkit.progress import progress_bar
    from vizkit.toolkit.resume import ResumeFolder
    from vizkit.toolkit.runs import read_run_info, snapshot_paths, write_run_info
    from vizkit.toolkit.scanning import merge_skipped, resumable_scan, scan_checkpoint
    from vizkit.toolkit.similarity import ssim
    from vizkit.toolkit.topk import RunningTopK
    from vizkit.toolkit.unit_stats import UnitStatistics
    from vizkit.toolkit.winners import crop_to_box, project_winners


_LAZY = {
    "RunningTopK": ("vizkit.toolkit.topk", "RunningTopK"),
    "project_winners": ("vizkit.toolkit.winners", "project_winners"),
    "crop_to_box": ("vizkit.toolkit.winners", "crop_to_box"),
    "parse_layers": ("vizkit.toolkit.channels", "parse_layers"),
    "parse_channel_spec": ("vizkit.toolkit.channels", "parse_channel_spec"),
    "select_channels": ("vizkit.toolkit.channels", "select_channels"),
    "default_layer": ("vizkit.toolkit.layers", "default_layer"),
    "extract_features": ("vizkit.toolkit.features", "extract_features"),
    "CachedFeatures": ("vizkit.toolkit.features", "CachedFeatures"),
    "parse_pool": ("vizkit.toolkit.features", "parse_pool"),
    "pool_features": ("vizkit.toolkit.features", "pool_features"),
    "LinearProbe": ("vizkit.toolkit.linear", "LinearProbe"),
    "Standardizer": ("vizkit.toolkit.linear", "Standardizer"),
    "fit_probe": ("vizkit.toolkit.linear", "fit_probe"),
    "select_probe": ("vizkit.toolkit.linear", "select_probe"),
    "PROBE_GRID": ("vizkit.toolkit.linear", "GRID"),
    "mean_class_accuracy": ("vizkit.toolkit.linear", "mean_class_accuracy"),
    "progress_bar": ("vizkit.toolkit.progress", "progress_bar"),
    "StopRequest": ("vizkit.toolkit.interrupts", "StopRequest"),
    "deferred_interrupts": ("vizkit.toolkit.interrupts", "deferred_interrupts"),
    "sigterm_as_interrupt": ("vizkit.toolkit.interrupts", "sigterm_as_interrupt"),
    "ProcessGroup": ("vizkit.toolkit.distributed", "ProcessGroup"),
    "is_main_process": ("vizkit.toolkit.distributed", "is_main_process"),
    "read_run_info": ("vizkit.toolkit.runs", "read_run_info"),
    "write_run_info": ("vizkit.toolkit.runs", "write_run_info"),
    "snapshot_paths": ("vizkit.toolkit.runs", "snapshot_paths"),
    "cache_folder": ("vizkit.toolkit.cache", "cache_folder"),
    "ResumeFolder": ("vizkit.toolkit.resume", "ResumeFolder"),
    "resumable_scan": ("vizkit.toolkit.scanning", "resumable_scan"),
    "scan_checkpoint": ("vizkit.toolkit.scanning", "scan_checkpoint"),
    "merge_skipped": ("vizkit.toolkit.scanning", "merge_skipped"),
    "UnitStatistics": ("vizkit.toolkit.unit_stats", "UnitStatistics"),
    "ssim": ("vizkit.toolkit.similarity", "ssim"),
    "figures": ("vizkit.toolkit.figures", None),
    "report": ("vizkit.toolkit.report", None),
    "spm": ("vizkit.toolkit.spm", None),
}
__all__ = [
    "PROBE_GRID",
    "CachedFeatures",
    "LinearProbe",
    "ProcessGroup",
    "ResumeFolder",
    "RunningTopK",
    "Standardizer",
    "StopRequest",
    "UnitStatistics",
    "cache_folder",
    "crop_to_box",
    "default_layer",
    "deferred_interrupts",
    "extract_features",
    "figures",
    "fit_probe",
    "is_main_process",
    "mean_class_accuracy",
    "merge_skipped",
    "parse_channel_spec",
    "parse_layers",
    "parse_pool",
    "pool_features",
    "progress_bar",
    "project_winners",
    "read_run_info",
    "report",
    "resumable_scan",
    "scan_checkpoint",
    "select_channels",
    "select_probe",
    "sigterm_as_interrupt",
    "snapshot_paths",
    "spm",
    "ssim",
    "write_run_info",
]
__getattr__, __dir__ = attach(__name__, _LAZY, globals())
