"""The shared core: documents, sources, render, trust, schedule, secrets, policy.

Runs everywhere (CI, the node, headquarters); imports no other part of the package.
"""
