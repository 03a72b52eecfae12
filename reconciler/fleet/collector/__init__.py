"""The collector (``outpost fleet serve``): signed status reports in, fleet answers out.

Modules, each with one job:

- `store`: SQLite or PostgreSQL, one schema with versioned migrations;
- `fleetview`: the verified repository's sites, node keys, fleets and waves;
- `ingest`: check → verify → rate-limit → store (batched);
- `verifier`: the signature step of ingest in worker processes;
- `rollout`: site states and a change's rollout by wave (pure);
- `metrics`: ``/metrics`` for Prometheus;
- `notify`: webhooks (generic JSON, Slack) with de-duplication;
- `app`: the Starlette routes (ingest straight on ASGI in front of them).

Imports Starlette and the database drivers: only the ``fleet`` extra installs
them (``pip install outpost[fleet]``); a node never imports this package.
"""
