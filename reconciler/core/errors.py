"""The exception hierarchy, split by what the caller should do next.

    OutpostError
    ├── PermanentError          the input is wrong: never retry the same input
    │   ├── DocumentError       a file in the repository is malformed (file:line)
    │   ├── ValidationError     a document breaks its schema or a cross-reference
    │   ├── RenderError         a site's slice cannot be rendered
    │   ├── PolicyError         a rendered slice breaks a deny policy
    │   ├── VerificationError   a commit is unsigned, badly signed or out of scope
    │   ├── SecretError         a secret cannot be decrypted or is not encrypted right
    │   ├── ConfigError         the node's own configuration is wrong
    │   └── ApplyError          the API server refused an object of the slice (4xx)
    └── TemporaryError          the outside world is down: retry with backoff
        ├── SourceUnavailable   the git remote or bundle inbox did not answer
        └── ClusterUnavailable  the Kubernetes API did not answer

Every message is written for an operator at 3 a.m.: it names the file and line
(or the commit and signer), says what was expected and what was found.
No exception from a third-party library escapes the module that talks to it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mark:
    """Where a value came from: a repository path and a 1-based line."""

    path: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


class OutpostError(Exception):
    """Root of every error Outpost raises on purpose."""

    def __init__(self, message: str, *, mark: Mark | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark

    def __str__(self) -> str:
        return f"{self.mark}: {self.message}" if self.mark else self.message


class PermanentError(OutpostError):
    """The input itself is wrong; retrying the same input cannot succeed."""


class DocumentError(PermanentError):
    """A repository file cannot be read as a document (YAML, size, encoding, kind)."""


class ValidationError(PermanentError):
    """A document breaks its schema or refers to something that does not exist."""


class RenderError(PermanentError):
    """A site's slice cannot be rendered from the tree."""


class PolicyError(PermanentError):
    """A rendered slice breaks a policy with severity deny."""


class VerificationError(PermanentError):
    """A commit is not signed, not signed by a trusted key, or changes paths its signer may not."""


class SecretError(PermanentError):
    """A secret file cannot be decrypted or is not encrypted the way the site needs."""


class ConfigError(PermanentError):
    """The node's own configuration (agent.yaml, trust root, key files) is wrong."""


class ApplyError(PermanentError):
    """The Kubernetes API server refused an object of the slice (invalid, denied, unknown kind).

    ``obj`` names the object (``Kind.group/namespace/name``), ``code`` and ``reason`` are the
    server's HTTP status and Status reason (``Invalid``, ``Forbidden``, ``NotFound``, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        obj: str = "",
        code: int = 0,
        reason: str = "",
        mark: Mark | None = None,
    ) -> None:
        super().__init__(message, mark=mark)
        self.obj = obj
        self.code = code
        self.reason = reason


class TemporaryError(OutpostError):
    """The outside world did not answer; the same input may succeed later."""


class SourceUnavailable(TemporaryError):
    """The git remote or the bundle inbox could not be read."""


class ClusterUnavailable(TemporaryError):
    """The Kubernetes API server could not be reached or timed out."""
