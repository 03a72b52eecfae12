"""Headquarters: bundles, images, fleet status, the collector and its alerts.

Runs at headquarters (an operator's desk or a server), never on a node.
"""
