"""The fleet side: bundles and image lists for air-gapped plants, the nodes' status reports.
Runs at headquarters (an operator's workstation or the fleet's server), never on a node."""
