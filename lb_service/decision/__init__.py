"""The decision: a pipeline of named steps from the registry to one pick (see ``pipeline``)."""

from __future__ import annotations

from lb_service.decision.outcome import Decision, Refusal, RefusalKind
from lb_service.decision.pipeline import DecisionInputs, decide

__all__ = ["Decision", "DecisionInputs", "Refusal", "RefusalKind", "decide"]
