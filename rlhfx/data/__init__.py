"""The data layer: user data sources -> canonical sft / pairwise / unpaired / prompt rows (see formats.py)."""

from rlhfx.data.formats import KINDS
from rlhfx.data.loader import DataConfig, load_data
from rlhfx.data.report import DropReport

__all__ = ["KINDS", "DataConfig", "DropReport", "load_data"]
