"""Helpers shared by the tests: in-memory SIP networks (``sipmem``), fakes of the engine's
collaborators (``engine_fakes``), harnesses for real peers (``peers``: SIPp, baresip, Kamailio),
a real ``ivr serve`` process (``robust_server``), a lossy relay (``netem``), audio synthesis and
analysis (``audio``, ``e2e_audio``, ``speech_corpus``), deadline waits (``waiting``), captures (``media_pcap``), SIPp scenario
builders (``sipp_xml``), sample SDP (``sdp_samples``), ports (``net``) and paths (``paths``).

Tests import them one way: ``from tests.helpers.peers import SippRunner``.
"""
