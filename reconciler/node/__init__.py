"""What runs on a store's node: the agent, its pipeline, state and reports.

Runs on every site's node; never imports the fleet side or a web or database library.
"""
