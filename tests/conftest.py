"""Shared fixtures: a small real corpus (a slice of this Python's standard library) and offline settings."""
import os
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def copy_stdlib_slice(dest: Path, max_bytes: int = 400_000) -> Path:
    """Copy real .py files (sorted, each < 40 kB) from the stdlib into ``dest`` until ~max_bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for sub in ("json", "email", "logging", "importlib", "concurrent", "xml", "http", "urllib", "unittest"):
        for f in sorted((root / sub).rglob("*.py")):
            size = f.stat().st_size
            if size > 40_000 or "test" in f.parts[-1]:
                continue
            target = dest / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            total += size
            if total >= max_bytes:
                return dest
    return dest


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return copy_stdlib_slice(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, corpus_dir):
    """A prepared data dir (BPE vocab 320) shared by the tests that only read it."""
    from sweep.data import DataConfig, prepare

    cfg = DataConfig(path=str(corpus_dir), tokenizer="bpe:320", val_percent=10.0,
                     out=str(tmp_path_factory.mktemp("data") / "d"))
    return cfg, prepare(cfg)


# ---------------------------------------------------------------------------------------------
# tiny copies of the hub layouts, made here (tests never touch the network)

TRICKY_DOCS = [
    "A literal <|endoftext|> inside a document is text, not a boundary.\n",
    "  naïve café — 東京 🚀\r\nWindows line ends\r\n\ttabs and trailing spaces   \n\n",
]


def prose_docs() -> list[str]:
    """Real English prose: the docstrings of stdlib modules (sorted, >= 300 characters), plus tricky text."""
    import ast

    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for f in sorted(root.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(f.read_text(encoding="utf-8")), clean=False)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if doc and len(doc) >= 300:
            docs.append(doc)
        if len(docs) >= 60:
            break
    return docs + TRICKY_DOCS


def write_c4_layout(dest: Path) -> dict:
    """allenai/c4 'en' in the hub's layout: json.gz lines with text/timestamp/url, README ``configs:``.
    Returns the documents per split."""
    import gzip
    import json

    docs = prose_docs()
    split = {"train": [d for i, d in enumerate(docs) if i % 7 != 3], "validation": [d for i, d in enumerate(docs) if i % 7 == 3]}
    (dest / "en").mkdir(parents=True)
    files = {"train": ["c4-train.00000-of-00002.json.gz", "c4-train.00001-of-00002.json.gz"],
             "validation": ["c4-validation.00000-of-00001.json.gz"]}
    for s, names in files.items():
        for k, name in enumerate(names):
            with gzip.open(dest / "en" / name, "wt", encoding="utf-8") as f:
                for i, text in enumerate(split[s][k::len(names)]):
                    f.write(json.dumps({"text": text, "timestamp": f"2019-04-{10 + i % 20:02d}T00:00:00Z",
                                        "url": f"https://example.org/{s}/{k}/{i}"}) + "\n")
    (dest / "README.md").write_text(
        "---\nconfigs:\n- config_name: en\n  data_files:\n  - split: train\n    path: en/c4-train.*.json.gz\n"
        "  - split: validation\n    path: en/c4-validation.*.json.gz\n---\n# c4 (test copy)\n")
    return split


def code_rows() -> list[dict]:
    """github-code rows: real Python (stdlib files) plus small Go and Rust files, several licenses."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rows = []
    licenses = ["mit", "apache-2.0", "gpl-3.0", "bsd-3-clause"]
    for i, f in enumerate(sorted((root / "json").glob("*.py")) + sorted((root / "email").glob("_*.py"))[:6]):
        code = f.read_text(encoding="utf-8")
        rows.append({"code": code, "repo_name": f"py/repo{i % 3}", "path": f.relative_to(root).as_posix(),
                     "language": "Python", "license": licenses[i % 4], "size": len(code.encode())})
    for i in range(24):
        go = f"package p{i}\n\n// Add{i} adds.\nfunc Add{i}(a, b int) int {{\n\treturn a + b + {i}\n}}\n"
        rs = f"/// Adds.\npub fn add_{i}(a: u32, b: u32) -> u32 {{\n    a + b + {i}\n}}\n"
        rows.append({"code": go, "repo_name": f"go/repo{i % 2}", "path": f"p{i}/add.go", "language": "GO",
                     "license": licenses[(i + 1) % 4], "size": len(go)})
        rows.append({"code": rs, "repo_name": "rust/repo", "path": f"src/add_{i}.rs", "language": "Rust",
                     "license": licenses[i % 4], "size": len(rs)})
    return rows


def write_github_code_layout(dest: Path) -> list[dict]:
    """codeparrot/github-code-clean's layout: data/train-0000K-of-00002.parquet with its six columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = code_rows()
    (dest / "data").mkdir(parents=True)
    schema = pa.schema([("code", pa.string()), ("repo_name", pa.string()), ("path", pa.string()),
                        ("language", pa.string()), ("license", pa.string()), ("size", pa.int64())])
    for k in range(2):
        part = rows[k::2]
        pq.write_table(pa.Table.from_pylist(part, schema=schema), dest / "data" / f"train-{k:05d}-of-00002.parquet",
                       row_group_size=16)
    return rows


@pytest.fixture(scope="session")
def c4_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("c4")
    return d, write_c4_layout(d)


@pytest.fixture(scope="session")
def github_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("github-code")
    return d, write_github_code_layout(d)


@pytest.fixture
def quick_parquet_shutdown(monkeypatch):
    """datasets sleeps 5 s after streaming parquet through interleaved shards (a guard against an Arrow
    thread-shutdown hang, apache/arrow#45214); a fraction of that is plenty for these tiny files."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.2)


# ---------------------------------------------------------------------------------------------
# a real SLURM cluster (tests/slurm_cluster.py), started once per session and only when a test asks for it

@pytest.fixture(scope="session")
def slurm_cluster(request):
    """munged + slurmctld + slurmd on this machine, one node with partition ``test``; SLURM_CONF points at it.

    Installs slurm-wlm and munge when missing (root and apt-get).  Under CI (CI=true) a cluster that cannot
    start fails the SLURM tests; elsewhere they are skipped with the reason."""
    from slurm_cluster import ClusterError, SlurmCluster

    # 10 CPUs offered whatever the machine has: the SLURM tests' ten tasks, one CPU each, mostly sleep or wait
    cluster = SlurmCluster(cpus=10)
    t0 = time.perf_counter()
    try:
        cluster.start()
    except (ClusterError, OSError, subprocess.SubprocessError) as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the SLURM test cluster did not start, so the SLURM tests cannot run: {e}")
        pytest.skip(f"no SLURM test cluster (the SLURM tests need root and apt-get or slurm-wlm + munge): {e}")
    # on the terminal even under -q and output capture: CI's log shows what the cluster cost
    installed = f"installed slurm-wlm + munge in {cluster.install_s:.0f} s, " if cluster.install_s is not None else ""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nSLURM test cluster: {installed}up in {time.perf_counter() - t0:.0f} s "
                                f"(SLURM_CONF={cluster.env['SLURM_CONF']})")
    try:
        yield cluster
    finally:
        cluster.stop()
