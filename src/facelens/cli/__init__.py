"""The `facelens` command. Thin: it parses, calls the Python API, prints.

One module per command group (`faces`, `gallery`, `clusters`, `evaluate`, `models`, `serve`); what they
share — the error and exit-code layer, output helpers, option types — is in `_common`.

Exit codes: 0 success, 1 "different person" (verify), "not found" (find) or "attack" (liveness), 2 errors (a bad option,
a missing model, or any input that could not be processed — the other inputs are still processed).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from facelens.cli import anonymize, clusters, evaluate, faces, gallery, index, liveness, models, serve, video
from facelens.cli._common import EXIT_OK, close_galleries, exit_code_for, out

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find, align, embed and compare faces.")

# Registration order is the order `facelens --help` lists them: keep it.
for _command in (faces.detect, faces.analyze, faces.embed, faces.verify, faces.find, faces.calibrate,
                 clusters.cluster, faces.identify, index.index, video.video, anonymize.anonymize, liveness.liveness,
                 serve.serve):
    app.command()(_command)
app.add_typer(models.models_app, name="models")
app.add_typer(gallery.gallery_app, name="gallery")
app.add_typer(evaluate.evaluate_app, name="evaluate")
app.add_typer(clusters.clusters_app, name="clusters")
app.add_typer(serve.keys_app, name="keys")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="print the version and exit", is_eager=True)] = False,
    profile: Annotated[str | None, typer.Option(
        "--profile", help="default (most accurate) or clean (only models licensed for commercial use); also "
                          "FACELENS_PROFILE. May be given anywhere on the line")] = None,
) -> None:
    if profile is not None:
        from facelens.profile import set_profile

        set_profile(profile)
    if version:
        from facelens import __version__

        out.print(f"facelens {__version__}")
        raise typer.Exit(EXIT_OK)


def profile_first(argv: list[str]) -> list[str]:
    """Every `--profile X` moved to the front, in order, where the root command reads it (the last one given
    wins, as for any option), from wherever it was given: `facelens detect --profile clean a.jpg` reads as
    naturally as `facelens --profile clean detect a.jpg`. Arguments after `--` are left alone."""
    end = argv.index("--") if "--" in argv else len(argv)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < end:
        arg = argv[i]
        if arg == "--profile":
            if i + 1 >= end:
                from facelens.errors import ConfigError

                raise ConfigError("--profile needs a value: default or clean")
            front += [arg, argv[i + 1]]
            i += 2
            continue
        (front if arg.startswith("--profile=") else rest).append(arg)
        i += 1
    return front + rest + list(argv[end:])


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error a user can cause ends as one line and exit code 2, never a traceback."""
    import sys

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        argv = profile_first(sys.argv[1:] if argv is None else list(argv))
        # without standalone mode click returns the code of a typer.Exit instead of raising it
        code = app(args=argv, standalone_mode=False)
        return code if isinstance(code, int) else EXIT_OK
    except (Exception, KeyboardInterrupt) as exc:
        return exit_code_for(exc)
    finally:
        close_galleries()


__all__ = ["app", "main"]
