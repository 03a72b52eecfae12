"""The node: what runs on a store's or plant's own machine (agent, pipeline, fetch, state, inbox).
It runs on the site's node only, and imports nothing from the fleet side, the web or databases."""
