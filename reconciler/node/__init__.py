"""The node: what runs on a store's or plant's own machine (agent, pipeline, fetch, state, inbox).

It imports nothing from the fleet side and no web or database library.
"""
