"""Helm charts and Kustomize directories rendered in CI into an app's ``manifests/<version>/``.

An app with ``spec.source`` gets its manifests from a chart or a Kustomize directory instead
of by hand. The node never renders them: ``outpost app vendor`` runs the real ``helm
template`` / ``kustomize build`` here, writes one file per object into
``apps/<app>/manifests/<version>/`` and records what it did in ``apps/<app>/vendor.lock.json``
(the inputs, the chart's digest, the tools' versions, a digest of every file written). The
output is committed, reviewed and signed like any manifest; ``${...}`` placeholders passed in
values come out in the objects and are filled per site by the renderer.

Two checks keep the vendored output honest:

- :func:`check_records` (part of ``outpost validate``; needs neither tool nor network):
  every version of a sourced app has a record, the record's inputs are the app's current
  inputs, a chart or Kustomize folder of the repository still has the recorded digest, and
  the files are exactly the recorded ones (a hand edit is a finding at that file);
- :func:`check_rendered` (``outpost app vendor --check``): the records, then a fresh render
  compared file by file with what is committed.

A chart whose digest changed under a version already recorded is refused
(:class:`ChangedChartError`): a chart version is a promise about its contents.

Every file is read bounded (`reconciler.core.source.read_file`, through the tree or
directly): a vendored manifest at most `MAX_VENDORED_FILE` bytes, a file of a chart or
Kustomize folder `MAX_SOURCE_FILE`, the archive ``helm pull`` leaves `MAX_CHART_ARCHIVE`.
One over its limit (or a FIFO, or a link) is a finding — an error for ``vendor`` — naming
the file and the limit, read no further than a stat.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.core.envelope import loads
from reconciler.core.errors import DocumentError, Mark, OutpostError
from reconciler.core.findings import Finding
from reconciler.core.loader import MAX_FILE_BYTES
from reconciler.core.model import App, Repository
from reconciler.core.source import MAX_READ_BYTES, Tree, WorkdirTree, read_file
from reconciler.core.validate import Check

LOCK_FILE = "vendor.lock.json"
RULE = "vendor"
TOOL_TIMEOUT = 300.0
"""Seconds one ``helm`` or ``kustomize`` run may take (a pull included)."""
MAX_OUTPUT = 32 * 2**20
"""Bytes of rendered output accepted from one run."""
MAX_LOCK = 4 * 2**20
MAX_VENDORED_FILE = MAX_FILE_BYTES
"""Bytes of one vendored manifest: the loader's limit for any YAML file of the repository,
which the renderer applies to it too (one Kubernetes object is at most about 1.5 MB in etcd,
and a bigger render is refused here rather than on every node)."""
MAX_SOURCE_FILE = MAX_READ_BYTES
"""Bytes of one file of a chart or Kustomize folder of the repository (digested)."""
MAX_CHART_ARCHIVE = 32 * 2**20
"""Bytes of the chart archive ``helm pull`` fetches: packaged charts are kilobytes to a few
megabytes; one over this is not read (its digest is what the record keeps)."""
HELM_ENV = "OUTPOST_HELM"
KUSTOMIZE_ENV = "OUTPOST_KUSTOMIZE"
_SEPARATOR = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)
_FILE_NAME = re.compile(r"[^a-z0-9.-]+")


class VendorError(OutpostError):
    """The source cannot be rendered (bad input, tool missing or failing); nothing is written."""


class ChangedChartError(VendorError):
    """A chart's digest differs from the one recorded for the same chart version."""


@dataclass(frozen=True)
class Tools:
    """Paths of the binaries to run; either may be missing until a source needs it."""

    helm: str | None
    kustomize: str | None

    @classmethod
    def find(cls, environ: Mapping[str, str] | None = None) -> Tools:
        """``$OUTPOST_HELM`` / ``$OUTPOST_KUSTOMIZE``, else ``helm`` / ``kustomize`` on PATH."""
        env = os.environ if environ is None else environ
        path = env.get("PATH")
        return cls(
            env.get(HELM_ENV) or shutil.which("helm", path=path),
            env.get(KUSTOMIZE_ENV) or shutil.which("kustomize", path=path),
        )

    def require(self, name: str) -> str:
        binary = self.helm if name == "helm" else self.kustomize
        if binary is None:
            variable = HELM_ENV if name == "helm" else KUSTOMIZE_ENV
            raise VendorError(
                f"{name} not found on PATH (or ${variable}): CI renders sources with the real "
                f"{name}; build it from the Outpost source tree with `python -m tools.charttools "
                "build` and put `$(python -m tools.charttools bin)` on PATH (see the README)"
            )
        return binary


@dataclass(frozen=True)
class Inputs:
    """Everything that decides one version's output, as recorded in the lock file."""

    kind: str
    """``helm`` or ``kustomize``."""
    settings: Mapping[str, Any]
    """Chart, repository or path, chart version, merged values, release name, namespace."""

    @property
    def digest(self) -> str:
        return _sha256(_canonical(self.settings))

    @property
    def folder(self) -> str | None:
        """The repository folder rendered (a chart folder or a Kustomize directory), if any."""
        path = self.settings.get("path")
        return str(path) if path else None


@dataclass(frozen=True)
class Rendered:
    """One version's output: file name → bytes, with the record that goes with it."""

    files: Mapping[str, bytes]
    record: Mapping[str, Any]


def inputs_for(app: App, version: str) -> Inputs:
    """The inputs of ``version`` of ``app``, from ``spec.source`` and ``versions.<v>.source``."""
    source = app.source
    release = app.versions.get(version)
    where = app.doc.mark("spec", "versions", version)
    if not source:
        raise VendorError(f"app {app.name!r} has no spec.source to vendor", mark=app.doc.mark())
    if not isinstance(release, dict):
        have = ", ".join(sorted(app.versions)) or "none"
        raise VendorError(
            f"app {app.name!r} has no version {version!r} (its versions: {have})",
            mark=app.doc.mark("spec", "versions"),
        )
    own_source = release.get("source")
    own: dict[str, Any] = own_source if isinstance(own_source, dict) else {}
    if "helm" in source:
        helm = source["helm"]
        if not own.get("version"):
            raise VendorError(
                f"version {version} of app {app.name!r} comes from chart {helm.get('chart')!r} "
                "but names no chart version: add versions."
                f"{version}.source.version (the chart version to render)",
                mark=where,
            )
        settings = {
            "chart": helm.get("chart"),
            "version": own["version"],
            "values": _merge(helm.get("values") or {}, own.get("values") or {}),
            "releaseName": helm.get("releaseName") or app.name,
            "namespace": app.namespace,
        }
        if helm.get("path"):
            settings["path"] = helm["path"]
        else:
            settings["repository"] = helm.get("repository")
        return Inputs("helm", settings)
    kustomize = source.get("kustomize") or {}
    return Inputs("kustomize", {"path": own.get("path") or kustomize.get("path")})


def folder_digest(tree: Tree, folder: str) -> str:
    """A digest of every file below ``folder`` (names and contents): no tool needed."""
    files = tree.files(folder)
    if not files:
        raise VendorError(f"{folder}/ has no files", mark=Mark(folder))
    lines = [
        f"{path[len(folder) + 1 :]}\0{_sha256(tree.read(path, MAX_SOURCE_FILE))}\n"
        for path in files
    ]
    return _sha256("".join(lines).encode())


def render(root: Path, app: App, version: str, tools: Tools) -> Rendered:
    """Render one version with the real tool into memory; nothing in ``root`` is written."""
    inputs = inputs_for(app, version)
    tree = WorkdirTree(root)
    record: dict[str, Any] = {"source": {"kind": inputs.kind, **inputs.settings}}
    record["inputsDigest"] = inputs.digest
    with tempfile.TemporaryDirectory(prefix="outpost-vendor-") as scratch:
        work = Path(scratch)
        if inputs.kind == "helm":
            text, digests, tool = _helm(root, tree, inputs, tools.require("helm"), work)
        else:
            text, digests, tool = _kustomize(root, tree, inputs, tools.require("kustomize"), work)
    record.update(digests)
    record["tools"] = tool
    files = split_objects(text, f"{inputs.kind} output for {app.name} {version}")
    record["files"] = {name: _sha256(data) for name, data in sorted(files.items())}
    record["outputDigest"] = output_digest(record["files"])
    return Rendered(files, record)


@dataclass(frozen=True)
class VendorResult:
    """What :func:`vendor` did: per version, the files written or removed; and the versions
    left as they are because their chart folder has moved on to another chart version."""

    changed: Mapping[str, list[str]]
    kept: Mapping[str, str]


def vendor(root: Path, app_name: str, versions: Sequence[str] | None, tools: Tools) -> VendorResult:
    """Render ``versions`` of an app into its manifests and record them. Without
    ``versions``: every version that can still be rendered (a repository chart folder
    renders only the chart version its Chart.yaml names; older app versions keep their
    reviewed output). A chart that changed under a recorded chart version is refused
    before anything is written."""
    app = _sourced_app(root, app_name)
    tree = WorkdirTree(root)
    chosen = list(versions) if versions else sorted(app.versions)
    kept: dict[str, str] = {}
    if not versions:
        for version in list(chosen):
            inputs = inputs_for(app, version)
            if _folder_moved_on(tree, inputs, {}):
                found = _chart_folder_version(tree, str(inputs.folder))
                kept[version] = (
                    f"{inputs.folder}/Chart.yaml is at {found}, not {inputs.settings['version']}"
                )
                chosen.remove(version)
    lock = read_lock(tree, app.name)
    results = {version: render(root, app, version, tools) for version in chosen}
    for version, result in results.items():
        refuse_changed_chart(app, lock, version, result.record)
    changed: dict[str, list[str]] = {}
    for version, result in results.items():
        changed[version] = _write_version(root / "apps" / app.name, version, result.files)
        lock[version] = dict(result.record)
    _write_lock(root / "apps" / app.name / LOCK_FILE, lock)
    return VendorResult(changed, kept)


def refuse_changed_chart(
    app: App, lock: Mapping[str, Any], version: str, record: Mapping[str, Any]
) -> None:
    """ChangedChartError if a recorded version rendered the same chart at the same chart
    version from different bytes (an archive's or a chart folder's digest)."""
    source = record.get("source", {})
    if source.get("kind") != "helm":
        return
    new = record.get("chartDigest") or record.get("folderDigest")
    for other, entry in sorted(lock.items()):
        if not isinstance(entry, dict) or not isinstance(entry.get("source"), dict):
            continue
        old_source = entry["source"]
        same_chart = all(
            old_source.get(k) == source.get(k) for k in ("chart", "version", "repository", "path")
        )
        old = entry.get("chartDigest") or entry.get("folderDigest")
        if same_chart and old and new and old != new:
            where = source.get("repository") or source.get("path")
            raise ChangedChartError(
                f"chart {source.get('chart')} {source.get('version')} from {where} has digest "
                f"{new}, but app version {other} recorded {old} for the same chart version in "
                f"apps/{app.name}/{LOCK_FILE}: its contents changed under the same version. "
                "Refusing to vendor it: ask the chart's publisher, or give the changed chart "
                "a new version",
                mark=app.doc.mark("spec", "versions", version),
            )


def check_records(repo: Repository, apps: Sequence[str] | None = None) -> list[Finding]:
    """Findings for vendored output that does not match its record: no tool, no network."""
    findings: list[Finding] = []
    for name in apps if apps is not None else repo.app_names:
        try:
            app = repo.app(name)
        except OutpostError:
            continue  # the format check reports a broken app.yaml
        if app is None or not app.source:
            continue
        findings.extend(_check_app(repo.tree, app))
    return findings


def vendor_check() -> Check:
    """The check ``outpost validate`` runs (``validate_tree(extra=[...])``)."""

    def check(repo: Repository, sites: Sequence[str]) -> list[Finding]:
        return check_records(repo)

    return check


def check_rendered(root: Path, apps: Sequence[str] | None, tools: Tools) -> list[Finding]:
    """``outpost app vendor --check``: the records, then a fresh render of every version whose
    source can still be rendered, compared with the committed files."""
    repo = Repository(WorkdirTree(root))
    names = list(apps) if apps else list(repo.app_names)
    findings = check_records(repo, names)
    for name in names:
        app = repo.app(name)
        if app is None or not app.source:
            continue
        lock = read_lock(repo.tree, app.name)
        for version in sorted(app.versions):
            base = f"apps/{app.name}/manifests/{version}"
            try:
                if _stale_chart_folder(root, app, version):
                    continue  # the record check already says the folder moved on
                result = render(root, app, version, tools)
                refuse_changed_chart(app, lock, version, result.record)
            except VendorError as exc:
                findings.append(Finding.from_error(exc, rule=RULE))
                continue
            committed: dict[str, bytes | None] = {}
            for path in repo.tree.files(base):
                try:
                    committed[path[len(base) + 1 :]] = repo.tree.read(path, MAX_VENDORED_FILE)
                except DocumentError as exc:  # the record check names it already
                    committed[path[len(base) + 1 :]] = None
                    findings.append(Finding.from_error(exc, rule=RULE))
            for file in sorted(set(committed) | set(result.files)):
                if committed.get(file) != result.files.get(file):
                    state = "missing" if file not in committed else "differs"
                    if file not in result.files:
                        state = "is not in the fresh render"
                    findings.append(
                        Finding(
                            f"{base}/{file}",
                            0,
                            f"{state}: a fresh {result.record['source']['kind']} render of "
                            f"{app.name} {version} does not match the committed output; run "
                            f"`outpost app vendor {app.name} --version {version}` and review",
                            rule=RULE,
                        )
                    )
    return findings


def read_lock(tree: Tree, app: str) -> dict[str, Any]:
    """The app's records by version; empty when there is no lock file."""
    path = f"apps/{app}/{LOCK_FILE}"
    if not tree.exists(path):
        return {}
    data = tree.read(path)
    if len(data) > MAX_LOCK:
        raise VendorError(f"larger than {MAX_LOCK} bytes; not a lock file", mark=Mark(path))
    try:
        lock = loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VendorError(
            f"not valid JSON ({exc}); it is written by `outpost app vendor`, run it again",
            mark=Mark(path),
        ) from None
    versions = lock.get("versions") if isinstance(lock, dict) else None
    if not isinstance(versions, dict):
        raise VendorError("expected an object with 'versions'", mark=Mark(path))
    return dict(versions)


def split_objects(text: str, what: str) -> dict[str, bytes]:
    """A rendered stream as one file per object, each document's text kept as the tool wrote
    it (comments included): ``<kind>-<name>.yaml``; with the namespace, then a number, when
    file names collide. Two objects of one kind, namespace and name are refused."""
    files: dict[str, bytes] = {}
    seen: set[tuple[str, str, str]] = set()
    for chunk in _SEPARATOR.split(text):
        try:
            body = yaml.safe_load(chunk)
        except yaml.YAMLError as exc:
            raise VendorError(f"{what} is not YAML: {exc}") from None
        if body is None:
            continue
        metadata = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(metadata, dict) or not metadata.get("name") or not body.get("kind"):
            raise VendorError(f"{what} has a document without kind and metadata.name: {chunk!r}")
        kind, name, namespace = (
            str(x) for x in (body["kind"], metadata["name"], metadata.get("namespace", ""))
        )
        if (kind, name, namespace) in seen:
            raise VendorError(f"{what} has two objects {kind}/{name} in namespace {namespace!r}")
        seen.add((kind, name, namespace))
        stem = _FILE_NAME.sub("-", f"{kind}-{name}".lower())
        candidates = [stem, _FILE_NAME.sub("-", f"{stem}-{namespace}".lower())]
        candidates += [f"{candidates[1]}-{n}" for n in range(2, len(files) + 3)]
        file = next(f"{c}.yaml" for c in candidates if f"{c}.yaml" not in files)
        files[file] = (chunk.strip("\n") + "\n").encode()
    if not files:
        raise VendorError(f"{what} has no objects")
    return files


def output_digest(files: Mapping[str, str]) -> str:
    return _sha256(
        "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items())).encode()
    )


def _check_app(tree: Tree, app: App) -> list[Finding]:
    lock_path = f"apps/{app.name}/{LOCK_FILE}"
    try:
        lock = read_lock(tree, app.name)
    except VendorError as exc:
        return [Finding.from_error(exc, rule=RULE)]
    findings: list[Finding] = []
    for version in sorted(app.versions):
        mark = app.doc.mark("spec", "versions", version)
        run = f"run `outpost app vendor {app.name} --version {version}` and commit the result"
        entry = lock.get(version)
        if not isinstance(entry, dict):
            findings.append(
                Finding.at(
                    mark, f"version {version} is not vendored ({lock_path}); {run}", rule=RULE
                )
            )
            continue
        try:
            inputs = inputs_for(app, version)
        except VendorError as exc:
            findings.append(Finding.from_error(exc, rule=RULE))
            continue
        if entry.get("inputsDigest") != inputs.digest:
            findings.append(
                Finding.at(
                    mark,
                    f"version {version}'s source or values changed since it was vendored "
                    f"(the record in {lock_path} is for other inputs): the output is stale; {run}",
                    rule=RULE,
                )
            )
        if inputs.folder is not None and entry.get("folderDigest"):
            try:
                now = folder_digest(tree, inputs.folder)
            except (VendorError, OutpostError) as exc:
                findings.append(Finding.from_error(exc, rule=RULE))
                now = entry["folderDigest"]
            if now != entry["folderDigest"] and not _folder_moved_on(tree, inputs, entry):
                findings.append(
                    Finding.at(
                        mark,
                        f"{inputs.folder}/ changed since version {version} was vendored from it: "
                        f"the output is stale; {run}"
                        + (
                            f" (a changed chart needs a new version: raise the version in "
                            f"{inputs.folder}/Chart.yaml and name it in a new app version)"
                            if inputs.kind == "helm"
                            else ""
                        ),
                        rule=RULE,
                    )
                )
        findings.extend(_check_files(tree, app.name, version, entry))
    for version in sorted(set(lock) - set(app.versions)):
        findings.append(
            Finding(
                lock_path,
                0,
                f"records version {version}, which app.yaml no longer lists; run "
                f"`outpost app vendor {app.name}` to drop it, and remove "
                f"apps/{app.name}/manifests/{version}/",
                rule=RULE,
            )
        )
    return findings


def _check_files(tree: Tree, app: str, version: str, entry: Mapping[str, Any]) -> list[Finding]:
    base = f"apps/{app}/manifests/{version}"
    files = entry.get("files")
    recorded: dict[str, Any] = files if isinstance(files, dict) else {}
    present = {path[len(base) + 1 :]: path for path in tree.files(base)}
    findings: list[Finding] = []
    for file in sorted(set(recorded) | set(present)):
        path = f"{base}/{file}"
        if file not in present:
            message = f"is recorded in apps/{app}/{LOCK_FILE} but missing"
        elif file not in recorded:
            message = f"is not in the vendored output recorded in apps/{app}/{LOCK_FILE}"
        else:
            try:
                digest = _sha256(tree.read(path, MAX_VENDORED_FILE))
            except DocumentError as exc:
                digest, message = "", f"{exc.message}; vendored files are at most MAX_VENDORED_FILE"
            else:
                message = (
                    f"was edited by hand: its digest differs from the one recorded in "
                    f"apps/{app}/{LOCK_FILE}"
                )
            if digest == recorded[file]:
                continue
        findings.append(
            Finding(
                path,
                0,
                f"{message}. Vendored output is regenerated, never edited: change the values or "
                f"the chart, run `outpost app vendor {app} --version {version}` and commit",
                rule=RULE,
            )
        )
    return findings


def _folder_moved_on(tree: Tree, inputs: Inputs, entry: Mapping[str, Any]) -> bool:
    """A repository chart whose Chart.yaml now has another version: older app versions keep
    their reviewed output (checked against the record) and cannot be rendered again."""
    if inputs.kind != "helm" or inputs.folder is None:
        return False
    return _chart_folder_version(tree, inputs.folder) != inputs.settings.get("version")


def _stale_chart_folder(root: Path, app: App, version: str) -> bool:
    inputs = inputs_for(app, version)
    return _folder_moved_on(WorkdirTree(root), inputs, {})


def _chart_folder_version(tree: Tree, folder: str) -> str | None:
    path = f"{folder}/Chart.yaml"
    if not tree.exists(path):
        return None
    try:
        chart = yaml.safe_load(tree.read(path, MAX_LOCK))
    except (yaml.YAMLError, DocumentError):  # folder_digest names the file
        return None
    version = chart.get("version") if isinstance(chart, dict) else None
    return str(version) if version is not None else None


def _helm(
    root: Path, tree: Tree, inputs: Inputs, helm: str, work: Path
) -> tuple[str, dict[str, str], dict[str, str]]:
    settings = inputs.settings
    chart, version = str(settings["chart"]), str(settings["version"])
    env = _helm_env(work)
    digests: dict[str, str] = {}
    if inputs.folder is not None:
        found = _chart_folder_version(tree, inputs.folder)
        if found != version:
            raise VendorError(
                f"the chart folder {inputs.folder}/ is at version {found}, not {version}: a "
                "chart folder renders only the version its Chart.yaml says",
                mark=Mark(f"{inputs.folder}/Chart.yaml"),
            )
        digests["folderDigest"] = folder_digest(tree, inputs.folder)
        target = str(root / inputs.folder)
    else:
        repository = str(settings["repository"])
        pulled = work / "pulled"
        pulled.mkdir()
        if repository.startswith("oci://"):
            pull = [helm, "pull", f"{repository.rstrip('/')}/{chart}", "--version", version]
        else:
            pull = [helm, "pull", chart, "--repo", repository, "--version", version]
        _run([*pull, "--destination", str(pulled)], env, f"helm pull of {chart} {version}")
        archives = sorted(pulled.glob("*.tgz"))
        if len(archives) != 1:
            raise VendorError(f"helm pull of {chart} {version} left {len(archives)} archives")
        try:
            archive = read_file(archives[0], archives[0].name, MAX_CHART_ARCHIVE)
        except DocumentError as exc:
            raise VendorError(
                f"the archive helm pulled for {chart} {version} ({exc}); MAX_CHART_ARCHIVE "
                "bounds what is read"
            ) from None
        digests["chartDigest"] = _sha256(archive)
        target = str(archives[0])
    values = work / "values.json"
    values.write_text(json.dumps(settings["values"]), encoding="utf-8")
    argv = [helm, "template", str(settings["releaseName"]), target]
    argv += ["--namespace", str(settings["namespace"]), "--values", str(values)]
    argv += ["--include-crds", "--skip-tests"]
    text = _run(argv, env, f"helm template of {chart} {version}")
    tool = _run([helm, "version", "--short"], env, "helm version").strip()
    return text, digests, {"helm": tool}


def _kustomize(
    root: Path, tree: Tree, inputs: Inputs, kustomize: str, work: Path
) -> tuple[str, dict[str, str], dict[str, str]]:
    folder = inputs.folder
    if folder is None or not tree.files(folder):
        raise VendorError(f"the Kustomize directory {folder}/ has no files", mark=Mark(str(folder)))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work), "KUBECONFIG": os.devnull}
    text = _run([kustomize, "build", str(root / folder)], env, f"kustomize build of {folder}")
    tool = _run([kustomize, "version"], env, "kustomize version").strip()
    return text, {"folderDigest": folder_digest(tree, folder)}, {"kustomize": tool}


def _helm_env(work: Path) -> dict[str, str]:
    """A private Helm home: no user repositories or plugins leak in. Credentials for a
    private OCI registry come only from ``$HELM_REGISTRY_CONFIG`` (``helm registry login``
    writes that file), proxies and a CA bundle from the usual variables."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work), "KUBECONFIG": os.devnull}
    for name in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{name}_HOME"] = str(work / f"helm-{name.lower()}")
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "SSL_CERT_FILE", "HELM_REGISTRY_CONFIG"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _run(argv: list[str], env: Mapping[str, str], what: str) -> str:
    try:
        result = subprocess.run(
            argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise VendorError(f"{what} did not finish within {TOOL_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise VendorError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()[-2000:]
        raise VendorError(f"{what} failed (exit {result.returncode}): {detail}")
    if len(result.stdout) > MAX_OUTPUT:
        raise VendorError(f"{what} printed more than {MAX_OUTPUT} bytes")
    return result.stdout.decode("utf-8", errors="replace")


def _sourced_app(root: Path, name: str) -> App:
    app = Repository(WorkdirTree(root)).app(name)
    if app is None:
        raise VendorError(f"no app {name!r}: apps/{name}/app.yaml does not exist")
    if not app.source:
        raise VendorError(
            f"app {name!r} has no spec.source: its manifests are written by hand",
            mark=app.doc.mark("spec"),
        )
    return app


def _write_version(folder: Path, version: str, files: Mapping[str, bytes]) -> list[str]:
    target = folder / "manifests" / version
    target.mkdir(parents=True, exist_ok=True)
    changed = []
    for old in sorted(target.iterdir()):
        if old.name not in files:
            old.unlink()
            changed.append(f"{target.name}/{old.name}")
    for name, data in sorted(files.items()):
        path = target / name
        if _current(path) != data:
            path.unlink(missing_ok=True)  # a FIFO or a link there is replaced, not written into
            path.write_bytes(data)
            changed.append(f"{target.name}/{name}")
    return changed


def _current(path: Path) -> bytes | None:
    """What a vendored file holds now; None when absent, or not a regular file of at most
    `MAX_VENDORED_FILE` bytes (it is written again whole)."""
    try:
        return read_file(path, path.name, MAX_VENDORED_FILE)
    except DocumentError:
        return None


def _write_lock(path: Path, versions: Mapping[str, Any]) -> None:
    document = {
        "comment": (
            "Written by `outpost app vendor`: what each version's manifests were rendered from, "
            "and a digest of every file. Do not edit; `outpost validate` compares it with "
            "manifests/<version>/."
        ),
        "versions": {v: versions[v] for v in sorted(versions)},
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return over


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
