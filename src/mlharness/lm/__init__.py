"""GPT language models: prepare text into token files, train, sample, export."""

import os

# OpenMP threads that spin while waiting stall when their sibling vCPU is descheduled by a
# busy host: on this project's 2-vCPU machines a training step went from 75 ms to 1.8 s.
# Waiting passively costs little when the CPUs are free. Set before torch is first imported
# (every lm module imports through this package); an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
