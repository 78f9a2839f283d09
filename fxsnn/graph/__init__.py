"""Graph plumbing: tracing, editing + finish(), patterns (data), activation sites in node.meta, rate-mode analysis."""

from .rate import rate_mode_blockers
from .sites import (
    AnalogOp,
    AnalogTable,
    Site,
    SiteRecord,
    SiteTable,
    annotate_sites_,
    find_analog_ops,
    find_sites,
    print_tabular,
)
from .tracing import trace

__all__ = [
    "trace",
    "find_sites",
    "find_analog_ops",
    "annotate_sites_",
    "print_tabular",
    "Site",
    "SiteTable",
    "SiteRecord",
    "AnalogOp",
    "AnalogTable",
    "rate_mode_blockers",
]
