"""Voice bots the bridge tests talk to: :mod:`tests.bots.plain` (a scriptable bot on the
``websockets`` library, for protocol details and faults) and the Pipecat bots
(:mod:`tests.bots.pipecat_bots`, run as their own processes)."""
