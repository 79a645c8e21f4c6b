"""Emulated agents: Ollama and vLLM hosts served over real HTTP, for tests and demos.

``spec`` reads the file (the simulator's cluster format plus engine and faults), ``host``
is what an agent does with requests (slots, queue, model loads, service times),
``ollama`` and ``vllm`` are the APIs, ``server`` the listeners and the admin endpoint,
``command`` the ``lb-service emulate`` subcommand.
"""

from __future__ import annotations

from lb_service.emulate.server import Emulator
from lb_service.emulate.spec import EmulatorSpec, Fault, load, parse

__all__ = ["Emulator", "EmulatorSpec", "Fault", "load", "parse"]
