"""The fleet dashboard: HTML pages served by the collector (``outpost fleet serve``).
Runs at headquarters, in the collector's process, behind the collector's bearer tokens."""
