"""In-memory adapters for every port: what the unit tests run the handlers and the door on.
Each passes the same contract suite (tests/contract) as its real adapter."""
