"""`vlbert-fast bench ...` as the runner sees it, in this process: the command hands its arguments unchanged to
`python -m benchmarks.run` in a process of its own (tests/benchmarks/test_bench_command.py checks that), so the
suites' tests call the runner directly, where monkeypatches and captured output reach it."""

from benchmarks.run import main as run


def main(argv: list[str]) -> int:
    assert argv[0] == "bench", argv
    return run(argv[1:])
