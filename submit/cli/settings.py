"""`qtrain settings`: every environment variable qtrain reads, its value here, default and meaning."""

from __future__ import annotations

import json

import typer

from jobs import settings
from submit.cli.common import JsonOption, command, console


@command("settings")
def show_settings(as_json: bool = JsonOption,
                  markdown: bool = typer.Option(False, "--markdown", help="The README's table of settings "
                                                "(names, defaults, meanings; no values).")) -> None:
    """List every environment variable qtrain reads: its value here (a secret shows as set or
    not), its default and what it means.  A value qtrain cannot use is marked; the command that
    reads it refuses it in one line."""
    rows = settings.describe()
    if as_json:
        print(json.dumps(rows))
        return
    if markdown:
        print("| variable | default | meaning |\n| --- | --- | --- |")
        for r in rows:
            default = f"`{r['default']}`" if r["default"] not in (None, "") else "-"
            print(f"| `{r['name']}` | {default} | {r['meaning']} |")
        return
    for r in rows:
        value = r["value"] if r["value"] is not None else (f"(default: {r['default']})" if r["default"] else "(not set)")
        mark = f"  <- {r['problem']}" if r["problem"] else ""
        console.print(f"{r['name']:<36} {value}{mark}", highlight=False, markup=False)
        console.print(f"{'':<36} {r['meaning']}", style="dim", highlight=False, markup=False)
