"""CI's checks: validate, diff, policy tests, scaffold.

Runs in CI and on an operator's machine; imports nothing from the node.
"""
