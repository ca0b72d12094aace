"""Where a plan's processes start: a launcher, never a method.

    local.py    this machine: the process itself, torchrun on one node, or one node of several meeting at a
                torchrun c10d rendezvous
    records.py  what the nodes of one launch tell each other through the storage they share
    slurm.py    a Slurm cluster: the sbatch script made from a plan, and sbatch/scontrol/scancel

Torch-free: launchers build command lines and read and write small files; the processes they start import
torch.
"""
