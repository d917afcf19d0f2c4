"""sweep.export and models.export: our Transformer -> Hugging Face LlamaForCausalLM, checked logit for logit.

Every case builds a real model, perturbs all of its weights (so norms are not all ones and a swapped
w1/w3 or wk/wv would show), saves it the way the trainer does, exports it, loads the export with
`LlamaForCausalLM.from_pretrained` and compares fp32 logits on random token batches.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.export import to_hf
from sweep.export import export, main
from models.transformer import ModelConfig, Transformer

from helpers import REPO
TOL = 1e-4
PROG_ERROR = "python -m sweep.export: error: "

CASES = {
    "mha": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=160, vocab_size=256, seq_len=32),
    "gqa": dict(d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, d_ff=172, vocab_size=300, seq_len=32),
    "mqa_theta": dict(d_model=48, n_layers=2, n_heads=4, n_kv_heads=1, d_ff=128, vocab_size=320, seq_len=16,
                      rope_theta=500.0),
    "tied": dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=96, vocab_size=512, seq_len=16,
                 tie_embeddings=True),
    "odd_vocab_dff_tied_gqa": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=300, vocab_size=1001,
                                   seq_len=32, tie_embeddings=True),
}


def make_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(cfg)
    with torch.no_grad():  # move every weight off its init (norms off 1.0) so each mapping matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def save_run(run_dir: Path, model: Transformer) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": model.cfg.to_dict(), "model": model.state_dict()}, run_dir / "weights.pt")
    return run_dir


def assert_same_logits(ours: Transformer, hf, seed: int = 1):
    from transformers import LlamaForCausalLM

    assert isinstance(hf, LlamaForCausalLM)
    assert next(hf.parameters()).dtype == torch.float32
    cfg = ours.cfg
    g = torch.Generator().manual_seed(seed)
    hf.eval()
    with torch.no_grad():
        for batch, T in ((3, cfg.seq_len), (2, cfg.seq_len // 2 + 1)):
            idx = torch.randint(0, cfg.vocab_size, (batch, T), generator=g)
            a, b = ours(idx), hf(idx).logits
            assert a.shape == b.shape == (batch, T, cfg.vocab_size)
            diff = (a - b).abs().max().item()
            assert diff <= TOL, f"max |logit diff| {diff:.3g} > {TOL}"


def load_hf(out: Path, attn: str = "sdpa"):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(out, attn_implementation=attn).eval()


def save_tokenizer(dest: Path, vocab: int = 300):
    """A small byte-level BPE saved the way sweep.data does (EOS = <|endoftext|>)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    text = ["def add(a, b):\n    return a + b\n", "class Point:\n    x: int = 0\n    y: int = 0\n"] * 30
    bpe.train_from_iterator(text, vocab_size=vocab, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                  bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(dest)
    return tok


def leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_function_matches_logits(tmp_path, case):
    cfg = ModelConfig(**CASES[case])
    model = make_model(cfg)
    run = save_run(tmp_path / "run", model)

    out = export(run, tmp_path / "hf")
    assert out == tmp_path / "hf"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert leftovers(tmp_path, "hf") == ["hf"]  # no temp sibling left behind

    c = json.loads((out / "config.json").read_text())
    assert c["architectures"] == ["LlamaForCausalLM"]
    assert (c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]) == (cfg.d_model, cfg.d_ff, cfg.n_layers)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
    assert (c["vocab_size"], c["max_position_embeddings"]) == (cfg.vocab_size, cfg.seq_len)
    assert c["rms_norm_eps"] == 1e-5 and c["tie_word_embeddings"] is cfg.tie_embeddings
    assert c["hidden_act"] == "silu" and c["attention_bias"] is False and c["mlp_bias"] is False
    theta = c.get("rope_parameters", {}).get("rope_theta", c.get("rope_theta"))  # transformers 5 / 4
    assert theta == cfg.rope_theta

    for attn in ("eager", "sdpa"):
        hf = load_hf(out, attn)
        assert_same_logits(model, hf)
        if cfg.tie_embeddings:
            assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()

    # in memory, from the module and from its state_dict
    assert_same_logits(model, to_hf(model))
    assert_same_logits(model, to_hf(model.state_dict(), cfg))


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The three CLI subprocesses of this file, started together (each pays for importing torch)."""
    root = tmp_path_factory.mktemp("cli")
    tok = save_tokenizer(root / "data" / "tokenizer")
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, d_ff=300, vocab_size=1001, seq_len=32)
    model = make_model(cfg, seed=3)
    run = save_run(root / "run", model)  # its result.json names the data dir that holds the tokenizer
    (run / "result.json").write_text(json.dumps({"data": {"path": str(root / "data"), "tokenizer": "bpe:300"}}))

    (root / "wrong_keys").mkdir()
    torch.save({"state_dict": model.state_dict(), "config": cfg.to_dict()}, root / "wrong_keys" / "weights.pt")

    jobs = {
        "ok": ([str(run), "--out", str(root / "export" / "hf")], root / "export" / "hf"),
        "missing": ([str(root / "no_such_run"), "--out", str(root / "out_missing")], root / "out_missing"),
        "wrong_keys": ([str(root / "wrong_keys"), "--out", str(root / "out_keys")], root / "out_keys"),
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "sweep.export", *argv], cwd=REPO, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (argv, _) in jobs.items()}
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        results[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), jobs[name][1])
    return results, model, tok


def test_cli_export_with_tokenizer_from_result_json(cli_runs):
    """The CLI on a run dir whose result.json names the data dir: weights and tokenizer both exported."""
    results, model, tok = cli_runs
    r, out = results["ok"]
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    assert "Traceback" not in r.stderr
    assert leftovers(out.parent, "hf") == ["hf"]

    assert_same_logits(model, load_hf(out, "eager"))
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(out)
    text = "def add(a, b):\n    return a + b\n"
    assert tok2(text)["input_ids"] == tok(text)["input_ids"]
    c = json.loads((out / "config.json").read_text())
    assert c["eos_token_id"] == c["bos_token_id"] == tok.eos_token_id


def test_explicit_tokenizer_and_run_dir_tokenizer(tmp_path):
    tok = save_tokenizer(tmp_path / "elsewhere")
    model = make_model(ModelConfig(**CASES["gqa"]), seed=4)
    run = save_run(tmp_path / "run", model)
    out = export(run, tmp_path / "a", tokenizer=tmp_path / "elsewhere")
    assert (out / "tokenizer.json").is_file()
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == tok.eos_token_id

    save_tokenizer(run / "tokenizer")  # <run dir>/tokenizer is found on its own
    assert (export(run, tmp_path / "b") / "tokenizer.json").is_file()
    assert (export(run / "weights.pt", tmp_path / "c") / "tokenizer.json").is_file()  # also from a .pt path


def test_checkpoint_sources(tmp_path):
    """No weights.pt: the numerically newest checkpoints/step_*.pt; or a .pt file given directly."""
    cfg = ModelConfig(**CASES["mqa_theta"])
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    models = {}
    for step, seed in ((900, 10), (1000, 11)):  # lexicographic order would pick step_900
        model = make_model(cfg, seed=seed)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)).backward()
        opt.step()
        opt.zero_grad()
        model.eval()
        torch.save({"model_config": cfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "step": step, "tokens": step * 64}, run / "checkpoints" / f"step_{step}.pt")
        models[step] = model

    assert_same_logits(models[1000], load_hf(export(run, tmp_path / "newest")))
    assert_same_logits(models[900], load_hf(export(run / "checkpoints" / "step_900.pt", tmp_path / "file")))

    final = make_model(cfg, seed=12)
    save_run(run, final)  # once weights.pt exists it wins over the checkpoints
    assert_same_logits(final, load_hf(export(run, tmp_path / "final")))


def test_compiled_state_dict_prefix_and_force(tmp_path):
    model = make_model(ModelConfig(**CASES["tied"]), seed=5)
    compiled_style = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    assert_same_logits(model, to_hf(compiled_style, model.cfg))

    run = save_run(tmp_path / "run", model)
    out = export(run, tmp_path / "hf")
    other = make_model(ModelConfig(**CASES["tied"]), seed=6)
    save_run(run, other)
    assert main([str(run), "--out", str(out), "--force"]) == 0
    assert_same_logits(other, load_hf(out))
    assert leftovers(tmp_path, "hf") == ["hf"]


# ---------------------------------------------------------------------------------------------
# errors: one line on stderr, exit 2, nothing written


def check_error_cli(r: subprocess.CompletedProcess, out: Path, *needles: str):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PROG_ERROR), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists()
    if out.parent.exists():
        assert leftovers(out.parent, out.name) == []


def test_cli_missing_source(cli_runs):
    r, out = cli_runs[0]["missing"]
    check_error_cli(r, out, "does not exist")


def test_cli_wrong_keys(cli_runs):
    r, out = cli_runs[0]["wrong_keys"]
    check_error_cli(r, out, "model_config")


def _bad_sources(tmp_path: Path) -> dict:
    cfg = ModelConfig(**CASES["tied"])
    model = make_model(cfg)
    good = {"model_config": cfg.to_dict(), "model": model.state_dict()}
    cases = {}

    def run_with(name, obj=None, raw=None):
        d = tmp_path / name
        d.mkdir()
        if obj is not None:
            torch.save(obj, d / "weights.pt")
        if raw is not None:
            (d / "weights.pt").write_bytes(raw)
        return d

    cases["empty run dir"] = (run_with("empty"), "no weights.pt")
    cases["not a checkpoint"] = (run_with("garbage", raw=b"not a torch file"), "weights_only")
    cases["non-tensor pickle (numpy)"] = (
        run_with("numpy", good | {"rng": __import__("numpy").random.get_state()}), "weights_only")
    untied = dict(CASES["tied"], tie_embeddings=False, d_ff=64)
    cases["config/weights shape mismatch"] = (
        run_with("shape", {"model_config": untied, "model": make_model(ModelConfig(**untied)).state_dict()
                           | {"layers.0.feed_forward.w1.weight": torch.zeros(96, 32)}}), "shape")
    sd = dict(model.state_dict())
    del sd["layers.1.ffn_norm.weight"]
    cases["missing weight"] = (run_with("missing", {"model_config": cfg.to_dict(), "model": sd}), "layers.1.ffn_norm")
    sd = dict(model.state_dict())
    sd["output.weight"] = sd["output.weight"] + 1
    cases["tied but different"] = (run_with("untied", {"model_config": cfg.to_dict(), "model": sd}), "tie_embeddings")
    cases["unknown config key"] = (
        run_with("badcfg", {"model_config": cfg.to_dict() | {"dropout": 0.1}, "model": model.state_dict()}), "dropout")
    cases["model is not a dict"] = (run_with("notdict", {"model_config": cfg.to_dict(), "model": [1, 2]}), "state_dict")
    ok = run_with("ok", good)
    cases["missing tokenizer dir"] = (ok, "tokenizer", ["--tokenizer", str(tmp_path / "no_tok")])
    small = run_with("small", {"model_config": dict(CASES["tied"], vocab_size=258),
                               "model": make_model(ModelConfig(**dict(CASES["tied"], vocab_size=258))).state_dict()})
    tok = save_tokenizer(tmp_path / "big_tok")
    assert len(tok) > 258
    cases["tokenizer bigger than vocab"] = (small, "vocab_size", ["--tokenizer", str(tmp_path / "big_tok")])
    return cases


def test_error_cases_in_process(tmp_path, capsys):
    for name, (src, needle, *extra) in _bad_sources(tmp_path).items():
        out = tmp_path / "outs" / name.replace(" ", "_")
        capsys.readouterr()
        rc = main([str(src), "--out", str(out), *(extra[0] if extra else [])])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert rc == 2, name
        assert len(lines) == 1 and lines[0].startswith(PROG_ERROR), (name, err)
        assert needle in lines[0], (name, lines[0])
        assert not out.exists(), name
        assert not (tmp_path / "outs").exists() or leftovers(tmp_path / "outs", out.name) == [], name


def test_existing_out_is_refused_without_force(tmp_path, capsys):
    run = save_run(tmp_path / "run", make_model(ModelConfig(**CASES["tied"])))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("mine")
    assert main([str(run), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
    assert (tmp_path / "hf" / "keep.txt").read_text() == "mine"
    with pytest.raises(FileExistsError):
        export(run, tmp_path / "hf")


def test_to_hf_rejects_mismatched_config():
    model = make_model(ModelConfig(**CASES["mha"]))
    with pytest.raises(ValueError, match="shape"):
        to_hf(model.state_dict(), ModelConfig(**dict(CASES["mha"], d_ff=128)))
    with pytest.raises(ValueError, match="needs cfg"):
        to_hf(model.state_dict())
