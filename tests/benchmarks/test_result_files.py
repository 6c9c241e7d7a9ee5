"""benchmarks/results holds the harness's CSVs and the static scorecard's sm90_static.csv (other columns): a run or a
comparison over the folder reads the first and leaves the second alone (a CPU step run into benchmarks/results once
stopped on it with a traceback)."""

import csv

from benchmarks import compare, harness


def test_a_folder_of_results_reads_only_the_harness_csvs(tmp_path):
    with (tmp_path / "sm90_static.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["kernel", "regs"], ["_attn_fwd_kernel", "168"]])
    row = dict.fromkeys(harness.COLUMNS, "1")
    with (tmp_path / "cpu_step.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=harness.COLUMNS)
        writer.writeheader()
        writer.writerow(row)
    assert harness.result_files(tmp_path) == [tmp_path / "cpu_step.csv"]
    assert compare.load([tmp_path]) == [row]
