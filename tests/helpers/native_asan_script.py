"""Run under AddressSanitizer by tests/test_media_native.py: the extension built with
-fsanitize=address (its path in SIMPLESIP_NATIVE_PATH) plays differential scripts, the batched
tick and hostile datagrams. Any memory error aborts the process; a mismatch exits non-zero."""

from __future__ import annotations

import importlib.util
import os
import random
import sys

spec = importlib.util.spec_from_file_location("simplesip.core._native", os.environ["SIMPLESIP_NATIVE_PATH"])
assert spec is not None and spec.loader is not None
module = importlib.util.module_from_spec(spec)
sys.modules["simplesip.core._native"] = module  # what simplesip.core.native imports
spec.loader.exec_module(module)

from simplesip.core import native  # noqa: E402
from tests.helpers.media_diff import (  # noqa: E402
    new_session,
    play,
    random_script,
    read_pass_check,
    run_tick_script,
    send_over_sockets,
    srtp_pair,
    srtp_transcript,
)

assert native.native is module and native.ENABLED

for seed in range(8):
    script = random_script(random.Random(seed), 600)
    pt, codec = [(0, "PCMU"), (8, "PCMA"), (96, "PCMU")][seed % 3]
    clock = 16000 if seed % 4 == 3 else 8000
    if play(new_session(True, pt, codec, clock), script) != play(new_session(False, pt, codec, clock), script):
        sys.exit(f"transcripts differ for seed {seed}")
for seed in range(2):
    if run_tick_script(True, seed) != run_tick_script(False, seed):
        sys.exit(f"run_tick differs for seed {seed}")

for seed in range(2):  # build_batch sending from C over real sockets, with its fallbacks
    compiled, pure = send_over_sockets(True, seed), send_over_sockets(False, seed)
    if compiled["received"] != pure["received"] or compiled["errors"] != pure["errors"]:
        sys.exit(f"packets on the wire differ for seed {seed}")

for suite in ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"):  # libsrtp called from C
    if srtp_transcript(True, suite)[0] != srtp_transcript(False, suite)[0]:
        sys.exit(f"SRTP transcripts differ ({suite})")
    params, _peer = srtp_pair(suite)
    if send_over_sockets(True, 3, srtp=params)["received"] != send_over_sockets(False, 3, srtp=params)["received"]:
        sys.exit(f"SRTP packets on the wire differ ({suite})")

for family, batch in ((2, 8), (10, 3), (2, 1)):
    result = read_pass_check(family, batch)
    if not all(item[1] for item in result if item[0] in ("frame", "stats")):
        sys.exit(f"read_pass differs (family {family}, batch {batch})")

rng = random.Random(1)
core = native.NativeCore()
core.latched = ("10.0.0.1", 4000)
core.remote_ssrc = 0x4242
core.fast_payload_type = 0
for i in range(20000):
    size = rng.choice([0, 1, 11, 12, 13, 40, 172, 400, 2000])
    data = bytearray(rng.getrandbits(8) for _ in range(size))
    if size > 12:
        data[0], data[1] = 0x80, 0
        data[8:12] = (0x4242).to_bytes(4, "big")
    core.receive_fast(bytes(data), i * 0.02)
    core.push(rng.getrandbits(16), rng.getrandbits(32), bytes(data[:rng.choice([0, 80, 160, 320, 4000])]), i * 0.02)
    if i % 2:
        core.pull(rng.random() < 0.1)
    if i % 7 == 0:
        core.build(bytes(data), i % 3 == 0)
        core.last_frame = bytes(data)

context = srtp_pair("AES_CM_128_HMAC_SHA1_80")[1]  # hostile datagrams into libsrtp through the core
core.srtp = True
core.set_srtp(*context.native_handles())
for i in range(5000):
    size = rng.choice([13, 22, 23, 182, 1499, 1500, 1501, 2000])
    data = bytearray(rng.getrandbits(8) for _ in range(size))
    data[0], data[1] = 0x80, 0
    data[8:12] = (0x4242).to_bytes(4, "big")
    core.receive_fast(bytes(data), i * 0.02)
print("differential ok")
