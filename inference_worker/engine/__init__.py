"""The OPT inference engine (imports torch; the web process must not import this package)."""

from .config import PRESETS, OPTConfig
from .engine import Engine
from .requests import Completion, Request, RequestOutput, SamplingParams, TokenEvent

__all__ = ["Engine", "OPTConfig", "PRESETS", "Request", "SamplingParams", "Completion", "RequestOutput", "TokenEvent"]
