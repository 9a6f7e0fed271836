"""The soak benchmark (benchmarks/dist_soak.py) counts what it reports: failed exits, aborted ranks, hung runs.
Stand-in launchers print what torchrun prints when a rank aborts; the real runs are the benchmark's."""

from benchmarks import dist_soak

ABORTING = """#!/bin/bash
echo 'terminate called without an active exception' >&2
echo 'terminate called without an active exception' >&2
printf '  exitcode  : -6 (pid: 11)  (SIGABRT)\\n  exitcode  : -15 (pid: 12)  (SIGTERM)\\n' >&2
exit 1
"""


def test_an_aborted_rank_a_clean_run_and_a_hung_run_are_counted(tmp_path):
    (tmp_path / 'abort.sh').write_text(ABORTING)
    (tmp_path / 'clean.sh').write_text('#!/bin/bash\necho done\n')
    (tmp_path / 'hang.sh').write_text('#!/bin/bash\nexec sleep 60\n')  # as the launchers exec torchrun
    aborted = dist_soak.launch([str(tmp_path / 'abort.sh')], tmp_path, timeout=60)
    assert (aborted['rc'], aborted['aborted_ranks'], aborted['sigabrt_ranks']) == (1, 2, 1)
    assert 'terminate called' in aborted['stderr_tail']
    clean = dist_soak.launch([str(tmp_path / 'clean.sh')], tmp_path, timeout=60)
    assert (clean['rc'], clean['aborted_ranks'], clean['stderr_tail']) == (0, 0, '')
    hung = dist_soak.launch([str(tmp_path / 'hang.sh')], tmp_path, timeout=1)
    assert hung['rc'] == 'timeout' and hung['seconds'] < 30


def test_the_table_has_a_row_per_label_and_kind():
    summary = dict(
        runs=3, exit_0=2, failed=1, aborted_ranks=1, sigabrt_ranks=1, runs_with_abort=1, timeouts=0, median_s=9.5
    )
    results = {
        'before': dict(code='main abc', parallel=3, summary={'train': summary}, load_before=[4.0], load_after=[5.5])
    }
    assert '| before | main abc | 3 | all | train | 3 | 2 | 1 | 1 | 1 | 9.5 | 4.0 -> 5.5 |' in dist_soak.markdown(
        results
    )
