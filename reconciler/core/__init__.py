"""The shared core: documents, sources, render, trust, schedule, secrets, policy, labels.
It runs everywhere (a site's node, CI, headquarters) and imports no other part."""
