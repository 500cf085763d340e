"""``pathseg plugins list`` / ``pathseg plugins doctor``: what is installed and what is broken."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from pathseg_core.plugins import registry


def main(argv: list[str]) -> int:
    """Print the plugin table (``list``) or each failure's traceback (``doctor``); exit 1 if any failed."""
    action = argv[0] if argv else "list"
    if action not in ("list", "doctor"):
        print(f"pathseg: error: unknown plugins action '{action}'; use list or doctor", file=sys.stderr)
        return 2
    records = registry().records()
    console = Console(width=160)
    table = Table(title="pathseg plugins (entry-point group pathseg.plugins)")
    for col in ("name", "distribution", "version", "task", "status"):
        table.add_column(col, overflow="fold")
    for rec in records:
        task = ", ".join(s.task for s in rec.models) or "-"
        status = "ok" if rec.error is None else f"[red]error[/red]: {rec.error}"
        table.add_row(rec.name, rec.distribution, rec.version, task, status)
    console.print(table)
    failed = [r for r in records if r.error]
    if action == "doctor":
        for rec in failed:
            console.rule(f"{rec.name} ({rec.distribution}) — {rec.value}")
            console.print(rec.error_detail, markup=False, highlight=False)
        if not failed:
            console.print("all plugins import cleanly")
    return 1 if failed else 0
