"""The in-process store: plain dicts, atomic because no method suspends mid-update.

Its registry, weights, strategy and sessions can be exported and imported
(``export_state``/``import_state``) so that ``store.snapshot`` can keep them in a file.
It keeps an index of its registry for picking (``store.index``), told of every change
here, and hands it out with each ``pick_state``. ``core`` holds the state; each other
module one group of operations, as the Redis store is laid out.
"""

from lb_service.store.memory.store import MemoryStore

__all__ = ["MemoryStore"]
