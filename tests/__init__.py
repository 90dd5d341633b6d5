"""The test suite: unit and in-memory tests here, tests against real peers in tests/peer/."""
