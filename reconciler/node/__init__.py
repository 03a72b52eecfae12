"""The node: the agent's tick — fetch or import signed commits, verify, render, gate, apply.
Runs on each store's or plant's node (a 4 GB box); imports the core only, no web or database."""
