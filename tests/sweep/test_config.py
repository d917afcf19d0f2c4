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


def test_planning_assumptions_are_not_what_is_trained():
    """data.assumed_train_tokens / assumed_vocab_size only stand in for unprepared data in a dry run: they change
    neither the data dir's hash nor the sweep's identity, and the new launch keys are not old sweep.* spellings."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sweep.app import CONF_DIR
    from sweep.config import MOVED_TO_LAUNCH, identity, register
    from sweep.data import DataConfig, config_hash

    base = DataConfig(source="c4", tokenizer="bpe:32000", max_tokens=1e9)
    assumed = DataConfig(source="c4", tokenizer="bpe:32000", max_tokens=1e9, assumed_train_tokens=1e9, assumed_vocab_size=5)
    assert config_hash(base) == config_hash(assumed) != config_hash(DataConfig(source="c4", tokenizer="bpe:32000"))
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        ident = [identity(compose("config", overrides=["+experiment=chinchilla_appc", *extra]))[0]
                 for extra in ([], ["data.assumed_train_tokens=1", "launch.device=H200", "launch.assumed_mfu=0.5"])]
    GlobalHydra.instance().clear()
    assert ident[0] == ident[1] and "data.max_tokens" in ident[0] and not any("assumed" in k for k in ident[0])
    assert "device" not in MOVED_TO_LAUNCH and "assumed_mfu" not in MOVED_TO_LAUNCH
    assert migrate_overrides(["sweep.device=H100"], warn=lambda m: None) == ["sweep.device=H100"]  # stays an error
