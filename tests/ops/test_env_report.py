"""`vlbert-fast env` lists both new ops with the backend `auto` picks and why the others are passed over."""

from vlbert_fast.ops import REGISTRY
from vlbert_fast.ops.environment import example_inputs, report


def test_report_shows_each_op_and_its_pick():
    text = report()
    assert "extensions:" in text and "vlbert_fast._C (csrc)" in text and "triton kernels" in text
    # tests run with TRITON_INTERPRET=1 on CPU tensors: triton could run, auto passes over it
    assert "fused_embedding: auto -> reference" in text
    assert "box_geometry_embedding: auto -> reference" in text
    assert "triton     ok, but auto passes over it: runs in the Triton interpreter" in text


def test_example_inputs_cover_every_registered_op_and_are_valid():
    inputs = example_inputs()
    assert set(REGISTRY) <= set(inputs)
    for name, (args, kwargs) in inputs.items():
        assert REGISTRY[name].not_supported_reasons(*args, **kwargs)["reference"] == []
        REGISTRY[name](*args, backend="reference", **kwargs)  # the examples are real inputs, not placeholders
