"""What runs on a device: the device and precision a run uses, the distributed process group
(torchrun, DDP, rank-0 writes), and the timm model with its self-describing checkpoint.

Owns: `device` (--device, --amp, --channels-last, a batch on the device, TTA-averaged outputs),
`distributed` (process group, ranks, gathering a sharded evaluation's rows), `model` (create,
freeze, checkpoint build/save/load/rebuild). May import: the ground floor (errors, io, config, ...).
"""
