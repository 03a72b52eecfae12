"""Trust: nothing is applied that was not signed by someone allowed to change it.

A compromised git server, a stolen push credential or a force-push must not
put anything on a store's node. The node therefore verifies *every* commit
since the one it last applied — not just the tip — against a trust root it
received at enrollment, with path-scoped delegation from the repository.

Layers (python-tuf's shape: a core that takes bytes, a thin I/O layer):

- `sshsig` — SSH signatures (git's ``gpg.format=ssh``) verified with
  `cryptography`, and OpenSSH public keys and fingerprints;
- `allowed_signers` — the trust root: git's ``allowed_signers`` file;
- `rules` — delegation in ``policies/signers.yaml`` with path patterns;
- `verify` — the pure core: commit objects in, per-commit verdicts out;
- `approvals` — thresholds of distinct principals (pending commits) and trust-root
  rotation through ``policies/root-signers``, on top of the verdicts;
- `heartbeat` — the signed ``outpost/heartbeat`` tag: "at this time the branch was here";
- `gitsource` — reads a range out of a repository with pygit2 (the only
  module here that imports pygit2, and only inside functions).

Typical use (what ``outpost verify`` and the agent do)::

    trust = parse_allowed_signers(path.read_bytes(), str(path))
    result = verify_repository(repo, trust, now=now, candidate=sha, since=applied)
    result.raise_for_refusal()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.core.lazy import lazy_names

if TYPE_CHECKING:
    from reconciler.core.trust.allowed_signers import (
        AllowedSigner,
        TrustRoot,
        parse_allowed_signers,
    )
    from reconciler.core.trust.gitsource import (
        open_repository,
        read_range,
        resolve,
        verify_repository,
    )
    from reconciler.core.trust.rules import Signer, SignerRules, parse_signers
    from reconciler.core.trust.sshsig import PublicKey, fingerprint, parse_public_key_line
    from reconciler.core.trust.verify import (
        CommitObject,
        CommitRecord,
        RangeResult,
        Verdict,
        emergency_reason,
        verify_range,
    )

# Each name is imported from its module when first used: a node's tick that verifies
# nothing new needs only `rules` (and `heartbeat`), not the range verification.
_HOME = {
    "AllowedSigner": "allowed_signers",
    "TrustRoot": "allowed_signers",
    "parse_allowed_signers": "allowed_signers",
    "open_repository": "gitsource",
    "read_range": "gitsource",
    "resolve": "gitsource",
    "verify_repository": "gitsource",
    "Signer": "rules",
    "SignerRules": "rules",
    "parse_signers": "rules",
    "PublicKey": "sshsig",
    "fingerprint": "sshsig",
    "parse_public_key_line": "sshsig",
    "CommitObject": "verify",
    "CommitRecord": "verify",
    "RangeResult": "verify",
    "Verdict": "verify",
    "emergency_reason": "verify",
    "verify_range": "verify",
}


__getattr__ = lazy_names(__name__, _HOME)


__all__ = [
    "AllowedSigner",
    "CommitObject",
    "CommitRecord",
    "PublicKey",
    "RangeResult",
    "Signer",
    "SignerRules",
    "TrustRoot",
    "Verdict",
    "emergency_reason",
    "fingerprint",
    "open_repository",
    "parse_allowed_signers",
    "parse_public_key_line",
    "parse_signers",
    "read_range",
    "resolve",
    "verify_range",
    "verify_repository",
]
