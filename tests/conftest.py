import torch

# The suite runs on 2 cores beside other work: one intra-op thread per test process keeps small
# models fast and timings steady instead of oversubscribing the cores.
torch.set_num_threads(1)
