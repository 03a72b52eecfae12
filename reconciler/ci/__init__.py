"""CI's checks on a change: validate, diff, when each site takes it, policy tests, scaffold.
Runs in the repository's CI and on an operator's workstation, never on a node."""
