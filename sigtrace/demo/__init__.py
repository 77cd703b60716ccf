"""Scenarios of ``sigtrace demo``: one module per source, found by the runner in sigtrace/cli.py.

A scenario module has:

- ``TITLE``: the heading the demo prints;
- ``LIBRARY``: the module to import (a scenario whose library is missing is shown as skipped, with
  ``INSTALL_HINT`` or ``pip install "sigtrace[<extra>]"``); the module's own name is the source's name
  in ``sigtrace.sources.REGISTRY``, which also gives the order;
- ``run()``: a few ordinary operations (and one failing one) on embedded defaults (SQLite in a
  temporary directory, moto in-process): no server needed. sigtrace is already installed when
  ``run()`` is called; the runner prints the spans, audit events and, at the end, metrics;
- optionally ``EXPECTED_ERRORS``: ``{error.type: why}`` for failures the scenario causes or meets on
  purpose, printed beside them so that a reader knows which errors are part of the show.
"""
