"""The shared core: documents, sources, render, trust, schedule, secrets, policy.

Runs everywhere (CI, nodes, headquarters); imports no part.
"""
