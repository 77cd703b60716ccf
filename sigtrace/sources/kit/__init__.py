"""The source kit: what every source needs beside the code specific to its library.

A source is one module on this kit (see ``sigtrace/sources/pynamodb.py`` for a small one):

- :class:`Source` (``kit/source.py``): connect guarded receivers, patch entry points with
  :meth:`Source.entry` / :meth:`Source.async_entry` (and, from a hook inside such a call, its
  operation: :meth:`Source.current_entry`), the one safety net (:meth:`Source.guard`),
  the options a source reads, and a :meth:`Source.detach` that undoes everything.
- :class:`ModelFacts` and :class:`FactsCache` (``kit/facts.py``): per-model facts computed once,
  :func:`database_of_url`, :func:`pk_text`, :func:`batch_audit`.
- :class:`Declarations` (``kit/declarations.py``): signals the user declares for tracing.
- :class:`ConnectionTransactions` (``kit/transactions.py``): a library's open transactions per
  connection, mirrored as the core's, so writes are held until they commit or roll back.

Adding a source: one module, one line in ``sigtrace/sources/__init__.py``'s registry (with the
library versions it supports), one parametrization of the contract suite (``tests/contract.py``),
one page under ``docs/sources/`` and its names in ``docs/conventions.md``.
"""

from sigtrace.sources.kit.declarations import Declarations
from sigtrace.sources.kit.facts import FactsCache, ModelFacts, batch_audit, database_of_url, pk_text
from sigtrace.sources.kit.source import After, Build, Entry, Source, Wrapper
from sigtrace.sources.kit.transactions import ConnectionTransactions, rolled_back_by_server

__all__ = [
    "After",
    "Build",
    "ConnectionTransactions",
    "Declarations",
    "Entry",
    "FactsCache",
    "ModelFacts",
    "Source",
    "Wrapper",
    "batch_audit",
    "database_of_url",
    "pk_text",
    "rolled_back_by_server",
]
