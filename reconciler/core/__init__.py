"""The shared core: documents, sources, render, trust, schedule, secrets, policy, labels.

It runs everywhere — on a site's node, in CI and at headquarters — and imports no other part.
"""
