"""The lb-service benchmark suite: ``make bench`` (``python -m bench``) writes BENCHMARKS.md.

Five parts, each a module with one ``run`` function returning plain results that
``report`` renders: ``core`` (the decision path called directly), ``rpc`` (the gRPC
server against its own floor), ``batch`` (SelectAgents), ``streams`` (WatchLoads
subscribers) and ``memory`` (bytes per agent, session and lease). Every figure is
reported next to a baseline measured in the same run, as a ratio, because the machines
these run on are shared and absolute times drift.
"""
