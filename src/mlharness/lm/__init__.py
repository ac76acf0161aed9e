"""GPT language models: prepare text into token files, train, sample, export."""

import os

# OpenMP threads that spin while waiting stall when their sibling vCPU is descheduled by a
# busy host: on this project's 2-vCPU machines a training step went from 75 ms to 1.8 s.
# Waiting passively costs little when the CPUs are free. Set before torch is first imported
# (every lm module imports through this package); an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# glibc maps the largest CPU tensors afresh each time (those above its mmap threshold, or too
# big for a worker thread's arena), a page fault per 4 KiB of them: a GPT-2-vocabulary
# model's logits (50,257 per position) spent a third of each step there. With this, torch
# asks for transparent huge pages for tensors of 2 MB or more: 1/40 of the faults and a
# 1.4x faster step. Smaller tensors, all of the char recipe's, are untouched.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
