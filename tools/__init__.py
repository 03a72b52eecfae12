"""Developer and CI tooling for the Outpost repository; not part of the shipped package."""
