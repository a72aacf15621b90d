"""Answers: decode a model's outputs into its answer per task, judge answers float vs quantized
and against labels."""

from workbench.task.adapters import ADAPTERS as ADAPTERS
from workbench.task.adapters import CallableAdapter as CallableAdapter
from workbench.task.adapters import Classification as Classification
from workbench.task.adapters import ClassificationAdapter as ClassificationAdapter
from workbench.task.adapters import CtcAdapter as CtcAdapter
from workbench.task.adapters import DetectionAdapter as DetectionAdapter
from workbench.task.adapters import Detections as Detections
from workbench.task.adapters import MapAdapter as MapAdapter
from workbench.task.adapters import OutputsAdapter as OutputsAdapter
from workbench.task.adapters import TaskAdapter as TaskAdapter
from workbench.task.adapters import Text as Text
from workbench.task.adapters import get_adapter as get_adapter
from workbench.task.adapters import score_levels as score_levels
