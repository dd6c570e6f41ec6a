"""Write the link-rate trace that ``make demo`` drives the end device's Wi-Fi link with.

    python examples/make_demo_trace.py > src/jqodi/scenarios/traces/demo-commute.tsv

Made here, not measured: an end device walking away from its access point and back, in the
demo's testbed seconds (the CPU-scale run lasts about 3 s of testbed time). Good Wi-Fi (~600
Mbit/s) for the first second, then the signal fades to ~200 Mbit/s for 1.2 s, then partial
recovery (~450 Mbit/s); every 50 ms sample jittered by a log-normal factor (σ = 0.15, seed 11).
Real traces (3G commutes, FCC broadband) are in ../shared/traces; the format is theirs:
``time_s  Mbit/s``.
"""
import math
import random

rng = random.Random(11)
print("# demo-commute: made by examples/make_demo_trace.py (seed 11); time_s  Mbit/s")
for i in range(80):
    t = i * 0.05
    level = 600.0 if t < 1.0 else 200.0 if t < 2.2 else 450.0
    print(f"{t:.2f}\t{level * math.exp(rng.gauss(0.0, 0.15)):.1f}")
