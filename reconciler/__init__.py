"""Outpost: GitOps for retail stores and industrial plants.

One git repository describes every site; this package validates it in CI and
reconciles one site's slice on that site's node.
"""

__version__ = "0.1.0"
