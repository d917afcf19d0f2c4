"""sweep.config: the run-only keys' move from `sweep` to `launch`, old spellings kept working with a warning."""
from helpers import launch, sweep_args
from sweep.config import migrate_overrides


def test_deprecated_sweep_keys_move_to_launch():
    warnings = []
    out = migrate_overrides(["sweep.dry_run=true", "sweep.budgets=[1e12]", "+sweep.refine=true", "launch.refine=false"],
                            warn=warnings.append)
    assert out == ["launch.dry_run=true", "sweep.budgets=[1e12]", "+launch.refine=true", "launch.refine=false"]
    assert len(warnings) == 2 and "sweep.dry_run is deprecated: it moved to launch.dry_run" in warnings[0]


def test_deprecated_spelling_works_on_the_command_line(tmp_path, corpus_dir):
    proc = launch(sweep_args(tmp_path, corpus_dir, "d", "sweep.dry_run=true"))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:]
    assert out.count("sweep.dry_run is deprecated") == 1 and "run id" in out
    assert not list((tmp_path / "d").glob("C*"))  # a dry run trains nothing
