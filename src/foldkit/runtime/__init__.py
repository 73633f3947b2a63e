"""What runs on a device: the device and precision a run uses, the distributed process group
(torchrun, DDP, rank-0 writes), and the timm model with its self-describing checkpoint.

Owns: `distributed` (process group, ranks, sharded evaluation's gathering), `model` (create,
freeze, checkpoint build/save/load/rebuild). May import: the ground floor (errors, io, config, ...).
"""
