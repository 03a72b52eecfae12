"""What runs on a store's node: agent, pipeline, fetch, state, config, apply, inbox.

Runs on the node under systemd; imports nothing from the fleet side.
"""
