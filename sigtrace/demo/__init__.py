"""Scenarios of ``sigtrace demo``: one module per source, each with ``TITLE``, ``LIBRARY`` and ``run()``.

A scenario performs a few ordinary operations (and one failing one) on embedded defaults
(SQLite in a temporary directory, moto in-process): no server needed. sigtrace is already
installed when ``run()`` is called; the runner prints what it captured.
"""
