"""Triton kernels, installed as `vlbert_fast.kernels` (setup.py maps this folder). One module per op; launch
heuristics in utils.py. Import through `vlbert_fast.ops`, which checks that Triton can run the inputs."""
