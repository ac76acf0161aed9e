"""``make quality-ext``'s two helpers around Cosmic Ray.

``config PYPROJECT TARGET``: Cosmic Ray's ``init``, ``exec`` and filters read a TOML file
whose top-level table is ``[cosmic-ray]`` and cannot look inside pyproject.toml's
``[tool.cosmic-ray]``; this copies that table to the file they read, so the settings live
in one place.

``score SESSION``: the mutation score over the mutants actually tested. ``cr-report``
counts the mutants the operator filter skipped as killed, which inflates its figure; this
leaves them out and lists each survivor as ``file:line operator (function)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import toml  # Cosmic Ray's own TOML library: installed with it (the mutation extra)
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def write_config(pyproject: str, target: str) -> None:
    table = tomllib.loads(Path(pyproject).read_text()).get("tool", {}).get("cosmic-ray")
    if table is None:
        sys.exit(f"Error: {pyproject} has no [tool.cosmic-ray] table: add it (DEVELOPMENT.md).")
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(toml.dumps({"cosmic-ray": table}))


def score(session: str) -> None:
    with use_db(session, WorkDB.Mode.open) as db:
        results = dict(db.results)
        items = {item.job_id: item for item in db.work_items}
    tested = {j: r for j, r in results.items() if r.worker_outcome != WorkerOutcome.SKIPPED}
    survived = [j for j, r in tested.items() if r.test_outcome == TestOutcome.SURVIVED]
    for job in sorted(survived, key=lambda j: _where(items[j])):
        print(f"survived: {_where(items[job])}")
    killed = len(tested) - len(survived)
    percent = 100 * killed / len(tested) if tested else 0.0
    skipped = len(results) - len(tested)
    print(
        f"Mutation score: {killed}/{len(tested)} killed ({percent:.1f}%), {len(survived)} "
        f"survived, {len(items) - len(results)} pending, {skipped} skipped by the operator filter."
    )


def _where(item: object) -> str:
    m = item.mutations[0]  # type: ignore[attr-defined]
    op = m.operator_name.removeprefix("core/")
    return f"{m.module_path}:{m.start_pos[0]} {op} ({m.definition_name})"


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"config": write_config, "score": score}[command](*args)
