"""Load an example application (examples/<name>/app.py) as a module, for the tests that run it in-process."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    path = EXAMPLES / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"{name}_example_app", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
