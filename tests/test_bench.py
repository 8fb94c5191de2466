"""Every script in bench/ loads: its imports resolve from a fresh checkout.

The scripts run by hand or in CI's proofs, not under pytest; a module they import
that moves or goes (as bench/processes.py did) would break them silently until
the next manual run. Loading each one (its `main` not run) catches that here.
"""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda path: path.name)
def test_bench_script_loads(script: Path) -> None:
    loaded = runpy.run_path(str(script), run_name="loaded_by_the_tests")
    assert callable(loaded.get("main")) or script.name == "schemathesis_hooks.py", (
        f"{script.name} has no main()"
    )


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda path: path.name)
def test_bench_script_shadows_no_module(script: Path) -> None:
    """A script runs with bench/ first on sys.path, so one named like a module the
    service imports (bench/mcp.py and the MCP SDK's `mcp`) breaks every script that
    imports the service."""
    found = importlib.util.find_spec(script.stem)
    assert found is None or BENCH in Path(found.origin or "").parents, (
        f"bench/{script.name} hides the module {script.stem} ({found.origin}) from the scripts"
    )
