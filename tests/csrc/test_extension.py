"""vlbert_fast._C: how it is built and loaded (vlbert_fast/_ext.py), and the checks of its C++ surface."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

from vlbert_fast import _ext
from vlbert_fast.ops import BackendNotSupported, roi_align
from vlbert_fast.ops.roi_align import ROI_ALIGN

requires_ext = pytest.mark.skipif(
    _ext.load() is None, reason=f"vlbert_fast._C unavailable: {_ext.unavailable_reason()}"
)


@requires_ext
def test_built_by_setup_py_with_cuda_only_where_torch_has_cuda():
    # `make install` builds the extension in place; the JIT path is the fallback, not the norm
    assert _ext.describe().startswith("built by setup.py")
    if torch.version.cuda is None:  # a CPU torch cannot have been built with the .cu sources
        assert not _ext.load().with_cuda() and "without CUDA" in _ext.describe()


@pytest.fixture
def fresh_loader(monkeypatch):
    """Forget the loaded extension for the test and restore it afterwards."""
    _ext._reset_for_tests()
    yield monkeypatch
    monkeypatch.undo()
    _ext._reset_for_tests()


def _no_built_module():
    raise ImportError("No module named 'vlbert_fast._C'")


def test_falls_back_to_a_jit_build_of_the_cpp_sources_with_one_warning(fresh_loader):
    calls = []

    def fake_load(**kwargs):  # stands in for torch.utils.cpp_extension.load (a real build takes ~30 s)
        calls.append(kwargs)
        return _ext.importlib.import_module("vlbert_fast._C")

    fresh_loader.setattr(_ext, "_import_built", _no_built_module)
    fresh_loader.setattr("torch.utils.cpp_extension.load", fake_load)
    fresh_loader.delenv("VLBERT_FAST_NO_JIT", raising=False)
    with pytest.warns(RuntimeWarning, match="JIT-building its C\\+\\+ part") as record:
        assert _ext.load() is not None
        assert _ext.load() is not None  # loaded once: no second build, no second warning
    assert len(record) == 1 and len(calls) == 1
    sources = calls[0]["sources"]
    assert [os.path.basename(s) for s in sources] == ["vlbert_fast_api.cpp", "roi_align_cpu.cpp", "philox_cpu.cpp"]
    assert all(os.path.isfile(s) for s in sources)
    assert _ext.describe().startswith("JIT-built")


def test_a_failed_jit_build_is_a_reason_not_a_crash(fresh_loader):
    def broken_load(**kwargs):
        raise RuntimeError("Error building extension 'vlbert_fast_C_jit': c++: not found")

    fresh_loader.setattr(_ext, "_import_built", _no_built_module)
    fresh_loader.setattr("torch.utils.cpp_extension.load", broken_load)
    fresh_loader.delenv("VLBERT_FAST_NO_JIT", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert _ext.load() is None
    reason = _ext.unavailable_reason()
    assert "No module named 'vlbert_fast._C'" in reason and "c++: not found" in reason
    assert _ext.describe() == f"not available: {reason}"
    x, rois = torch.randn(1, 2, 4, 4), torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])
    reasons = ROI_ALIGN.not_supported_reasons(x, rois, (2, 2), 1.0, 1, False, False)
    assert "c++: not found" in reasons["native"][0]
    with pytest.raises(BackendNotSupported, match="native.*vlbert_fast._C unavailable"):
        roi_align(x, rois, 2, 1.0, backend="native")
    assert roi_align(x, rois, 2, 1.0).shape == (1, 2, 2, 2)  # auto moves on to a backend that can run


def test_jit_can_be_disabled(fresh_loader):
    fresh_loader.setattr(_ext, "_import_built", _no_built_module)
    fresh_loader.setenv("VLBERT_FAST_NO_JIT", "1")
    assert _ext.load() is None and "VLBERT_FAST_NO_JIT=1" in _ext.unavailable_reason()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("VLBERT_FAST_TEST_JIT") != "1", reason="a real JIT build takes ~1 min on 2 cores")
def test_real_jit_build_in_a_fresh_process(tmp_path):
    # hide the built module, build into an empty TORCH_EXTENSIONS_DIR, run the op against the reference
    script = (
        "import sys, warnings, torch; sys.modules['vlbert_fast._C'] = None\n"
        "from vlbert_fast import _ext\n"
        "from vlbert_fast.ops import roi_align, roi_align_reference\n"
        "assert _ext.load() is not None, _ext.unavailable_reason()\n"
        "assert _ext.describe().startswith('JIT-built'), _ext.describe()\n"
        "x = torch.randn(2, 3, 5, 6, dtype=torch.float64)\n"
        "r = torch.tensor([[1, 0.0, 1, 9, 7]], dtype=torch.float64)\n"
        "got, want = roi_align(x, r, 2, 0.5, 0, backend='native'), roi_align_reference(x, r, 2, 0.5, 0)\n"
        "torch.testing.assert_close(got, want)\n"
    )
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=600)


@requires_ext
@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.zeros(2, 4, 4), torch.zeros(1, 5)), r"features must have shape \[N, C, H, W\]"),
        ((torch.zeros(1, 2, 4, 4), torch.zeros(1, 4)), r"rois must have shape \(rois.size\(0\), 5\).*found \[1, 4\]"),
        ((torch.zeros(1, 2, 4, 4), torch.zeros(1, 5, dtype=torch.float64)), "rois must be Float.*found Double"),
        ((torch.zeros(1, 2, 4, 4, dtype=torch.int32), torch.zeros(1, 5)), "features must be float32.*found Int"),
        ((torch.zeros(1, 2, 4, 4), torch.zeros(5, 2).T), "rois must be contiguous"),
    ],
)
def test_cpp_checks_name_the_argument(args, match):
    features, rois = args
    with pytest.raises(RuntimeError, match=match):
        _ext.load().roi_align_forward(features, rois, 2, 2, 1.0, 1, False, False, 0)


@requires_ext
def test_cpp_backward_checks_rows_match():
    ext = _ext.load()
    with pytest.raises(RuntimeError, match=r"rois must have shape \(grad_output.size\(0\), 5\) = \[3, 5\]"):
        ext.roi_align_backward(torch.zeros(3, 2, 2, 2), torch.zeros(2, 5), 1, 4, 4, 1, 1.0, False, False, 0)
    with pytest.raises(RuntimeError, match="sampling_ratio must be >= 0"):
        ext.roi_align_backward(torch.zeros(2, 2, 2, 2), torch.zeros(2, 5), 1, 4, 4, -1, 1.0, False, False, 0)


@requires_ext
def test_env_reports_the_extension_and_the_backend_auto_picks():
    from vlbert_fast.ops.environment import report

    text = report()
    assert f"vlbert_fast._C (csrc) {_ext.describe()}" in text
    pick = "native" if not torch.cuda.is_available() or _ext.load().with_cuda() else "triton"
    assert f"roi_align: auto -> {pick}" in text
