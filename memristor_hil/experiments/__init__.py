"""The published learning tasks, run with mPES beside Nengo's PES: networks, metrics, plots.

:mod:`.function_learning` holds the paper-1 and paper-2 networks that ``memristor-hil demo``
and ``examples/`` run. Imports Nengo (and Matplotlib for plots).
"""
