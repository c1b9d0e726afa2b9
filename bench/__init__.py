"""``make bench``: Framewire against a bare loop on the same cores, latency and scale-out.

Modules: ``inputs`` (cached demo frames), ``bare`` (the bare loop), ``feed`` (the feeder that
plays the cameras), ``stack`` (Framewire phases under the supervisor), ``machine`` (what
the machine is, /proc CPU time, RAPL energy), ``stats`` (the pure arithmetic and the result),
``report`` (table, JSON, chart, docs) and ``run`` (the phases in order).
"""
