"""Lab bench tools, usable with any crossbar.

- :mod:`.record`: the crash-safe experiment record (an SQLite file) and its Python API;
- :mod:`.recording`: :class:`~.recording.RecordingCrossbar`, which records every batch and read
  of any :class:`~memristor_hil.Crossbar`;
- :mod:`.record_policy`: where ``open_crossbar`` records hardware runs by default;
- :mod:`.characterize`: pulse-and-read schedules for measuring devices;
- :mod:`.fitting`: fitting the power law to measured devices (imports SciPy).

Import the module you need; this package imports none of them.
"""
