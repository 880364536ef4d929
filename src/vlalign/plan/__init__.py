"""`vlalign plan`: what a configuration will cost, stage by stage, before anything runs.

Items per stage come from the config and its sources (`items.py`), FLOPs per item from the real
architectures counted with `torch.utils.flop_counter` (`architectures.py`, `flops.py`), disk from the
stored formats (`disk.py`), the training step's peak memory from its tensors (`memory.py`), and time from
a named GPU's peak and a stated utilisation (`gpus.py`). Every number that is not counted is an
`Assumption` with its source (`assumptions.py`), printed under the table (`plan.py`).
"""
