"""The shared core: read, validate, render, verify, schedule, decrypt and policy-check a repository.
Runs everywhere (each site's node, CI, headquarters) and imports no other part of the package."""
