"""flightrec's dashboard: a Streamlit app over a trace store.

``flightrec dashboard --db FILE`` opens a store read-only; ``flightrec serve`` runs it beside the
collector, on the store the collector writes, so it shows sessions as they land. Nothing imports
this package: it reads through the public APIs of ``tracer``, ``replay`` and ``evals``.
"""

from ._launch import APP, run
from ._source import Mode, Source

__all__ = ["APP", "Mode", "Source", "run"]
