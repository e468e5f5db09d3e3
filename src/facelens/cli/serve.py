"""`facelens serve` (a root command, registered by `facelens.cli`) and `facelens keys`, the API keys it
checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from facelens.cli._common import DetSizeOpt, GalleryOpt, JsonOpt, err, escape, fail, out, print_json

keys_app = typer.Typer(no_args_is_help=True, help="API keys for `facelens serve` (stored hashed).")
KeysOpt = Annotated[Path | None, typer.Option("--keys", help="key database (default $FACELENS_HOME/keys.sqlite)")]


def _key_store(path: Path | None) -> Any:
    from facelens.service import default_keys_path
    from facelens.service.keys import KeyStore

    return KeyStore(path or default_keys_path())


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who or what uses the key")],
    scope: Annotated[str, typer.Option("--scope", help=(
        "read (detect, identify, names), faces (+ face thumbnails, photo paths), enroll (+ add people and "
        "faces) or admin (everything)"))] = "read",
    keys: KeysOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a key; its token is printed once and cannot be shown again."""
    key, token = _key_store(keys).create(name, scope)
    if json_out:
        print_json({**key.to_dict(), "token": token})
    else:
        out.print(f"key {key.id} ({key.scope}) for {escape(key.name)}:\n{token}")


@keys_app.command("list")
def keys_list(keys: KeysOpt = None, json_out: JsonOpt = False) -> None:
    """Every key: id, name, scope, created, revoked (never the secret)."""
    import datetime as dt

    items = _key_store(keys).list()
    if json_out:
        print_json([k.to_dict() for k in items])
        return
    table = Table("id", "name", "scope", "created", "last used", "revoked")
    when = lambda t: dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else ""  # noqa: E731
    for k in items:
        table.add_row(k.id, escape(k.name), k.scope, when(k.created), when(k.last_used), when(k.revoked))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id (from `keys list`)")],
                keys: KeysOpt = None) -> None:
    """Revoke a key: requests with it are refused from now on."""
    key = _key_store(keys).revoke(key_id)
    out.print(f"revoked key {key.id} ({escape(key.name)})")


def serve(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    gallery: GalleryOpt = None,
    keys: KeysOpt = None,
    collection: Annotated[Path | None, typer.Option(
        "--collection", help="clustered collection the page shows (default $FACELENS_HOME/collection)")] = None,
    photos_root: Annotated[Path | None, typer.Option(
        "--photos-root", help="server folders /v1/cluster and /v1/video jobs may read (off unless given)")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="model threads")] = 2,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.1)] = 20.0,
    det_size: DetSizeOpt = "auto",
    max_video_seconds: Annotated[float, typer.Option(
        "--max-video-seconds", min=1.0, help="a /v1/video job stops after this much video")] = 900.0,
) -> None:
    """The REST API (OpenAPI at /docs) and the web page at http://HOST:PORT/."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise fail("the service needs its extra: pip install 'facelens[serve]'") from None
    from facelens.gallery import default_gallery_path
    from facelens.pipeline import FaceAnalyzer
    from facelens.profile import active_profile
    from facelens.service import default_collection_path, default_keys_path

    FaceAnalyzer(det_size=det_size).check_models()  # a missing model too, naming the pull command
    from facelens.service import serve as run_server

    keys_path = keys or default_keys_path()
    if not _key_store(keys_path).list():
        err.print(f"no API keys yet: create one with `facelens keys create NAME --scope admin --keys {keys_path}`")
    err.print(f"facelens on http://{host}:{port}/ (API docs at /docs), profile {active_profile().name}")
    run_server(host, port, gallery or default_gallery_path(), keys_path, collection or default_collection_path(),
               photos_root, workers=workers, max_upload_mb=max_upload_mb, det_size=det_size,
               max_video_seconds=max_video_seconds, profile=active_profile().name)
