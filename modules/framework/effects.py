"""Effects shared by the modules' pure cores: an EVerest error to raise or clear.

A core decides; its adapter carries the effect out with ``Module.raise_error`` /
``Module.clear_error`` on the implementation the error belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

from .error_model import Severity


@dataclass(frozen=True)
class RaiseError:
    error_type: str
    sub_type: str
    message: str
    severity: Severity


@dataclass(frozen=True)
class ClearError:
    error_type: str
    sub_type: str = ""
