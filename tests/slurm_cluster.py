"""A real single-node SLURM cluster for the tests: munged, slurmctld and slurmd on this machine, as root.

``SlurmCluster.start()`` installs Debian's slurm-wlm and munge when they are missing, writes a minimal
slurm.conf and a munge key into a fresh temp dir, starts the three daemons (in the foreground, so that we own
their PIDs) and waits until ``sinfo`` shows the node idle; ``stop()`` cancels the cluster's jobs and ends exactly
those daemons.  Everything talks through ``SLURM_CONF`` (set in ``os.environ``, so that submitit's ``sbatch`` and
the jobs it starts see this cluster) and the munge socket in the temp dir, never the machine's own config.

Run by hand (e.g. to poke at it): ``python tests/slurm_cluster.py`` starts one and waits for Ctrl-C.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

PARTITION = "test"
PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")


class ClusterError(RuntimeError):
    """The cluster could not be installed or started (the message says which step, with the daemon's log)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, env=None, timeout=60, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-2000:]}")
    return p


def install() -> Optional[float]:
    """apt-get install slurm-wlm and munge unless their daemons are there; the seconds it took (None: nothing to do)."""
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ClusterError(f"SLURM is not installed and cannot be here (needs root and apt-get): "
                           f"apt-get install {' '.join(PACKAGES)}")
    t0 = time.perf_counter()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], env=env, timeout=600)
    _run(["apt-get", "install", "-y", "-q", *PACKAGES], env=env, timeout=900)
    return time.perf_counter() - t0


class SlurmCluster:
    def __init__(self, cpus: int, partition: str = PARTITION):
        self.cpus = cpus  # what the node offers SLURM; see start()
        self.partition = partition
        self.dir: Optional[Path] = None
        self.procs: dict = {}
        self.install_s: Optional[float] = None
        self.env: dict = {}
        self._old_conf = None

    def _daemon(self, name: str) -> str:
        return shutil.which(name) or f"/usr/sbin/{name}"

    def start(self, timeout: float = 90) -> "SlurmCluster":
        self.install_s = install()
        if os.geteuid() != 0:
            raise ClusterError("the test cluster runs its daemons as root (SlurmUser=root); run the tests as root")
        d = self.dir = Path(tempfile.mkdtemp(prefix="slurm-"))  # short: a unix socket path has at most 107 bytes
        d.chmod(0o755)  # munged wants the socket's directory searchable by all
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        host = socket.gethostname().split(".")[0]
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        sock = d / "munge.sock"
        conf = d / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=sweeptest",
            f"SlurmctldHost={host}(127.0.0.1)",  # the address given: no name resolution needed
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root", "SlurmdUser=root",
            # cred_expire also holds a requeued job back (begin time = now + cred_expire + 1): 120 s by default
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=cred_expire=15,socket={sock}",
            f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "ReturnToService=2", "JobRequeue=1",
            "SlurmctldTimeout=10", "SlurmdTimeout=30", "MinJobAge=30", "InactiveLimit=0", "KillWait=10",
            # the node offers `cpus` CPUs whatever the hardware has, so that the tests' small jobs (one thread
            # each) can run side by side on a 2-core machine
            "SlurmdParameters=config_overrides",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem_mb * 3 // 4} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")
        self.env = {**os.environ, "SLURM_CONF": str(conf)}
        try:
            self._spawn("munged", ["-F", "--force", "--num-threads=4", f"--key-file={key}", f"--socket={sock}",
                                   f"--pid-file={d / 'munged.pid'}", f"--seed-file={d / 'munged.seed'}",
                                   f"--log-file={d / 'munged.log'}"])
            self._wait(lambda: sock.exists(), 20, "munged did not create its socket")
            self._spawn("slurmctld", ["-D", "-f", str(conf)])
            self._spawn("slurmd", ["-D", "-f", str(conf), "-N", host])
            self._wait(self._node_idle, timeout, "the node did not become idle")
        except BaseException:
            self.stop()
            raise
        self._old_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(conf)  # sbatch (submitit), srun and the jobs themselves read it
        return self

    def _spawn(self, name: str, args: list) -> None:
        log = open(self.dir / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen([self._daemon(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)

    def _node_idle(self) -> bool:
        p = _run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env, check=False, timeout=20)
        return p.returncode == 0 and p.stdout.strip() == "idle"

    def _wait(self, ok, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise ClusterError(f"{dead[0]} exited ({self.procs[dead[0]].returncode}): {self.logs(dead[0])}")
            if ok():
                return
            time.sleep(0.5)
        raise ClusterError(f"{what} within {timeout:.0f} s: " + " | ".join(self.logs(n) for n in self.procs))

    def logs(self, name: str, tail: int = 1500) -> str:
        text = ""
        for f in (self.dir / f"{name}.out", self.dir / f"{name}.log"):
            if f.exists():
                text += f.read_text(errors="replace")
        return f"{name}: {text.strip()[-tail:]}"

    def scontrol(self, *args) -> str:
        return _run(["scontrol", *args], env=self.env).stdout

    def scancel(self, *args) -> str:
        return _run(["scancel", *args], env=self.env).stdout

    def stop(self) -> None:
        """Cancel this cluster's jobs, then end the daemons we started (by PID): slurmd, slurmctld, munged."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            _run(["scancel", "--full", "--user=root"], env=self.env, check=False, timeout=30)
            deadline = time.time() + 20  # let slurmd end the jobs' processes before it goes
            while time.time() < deadline:
                p = _run(["squeue", "-h", "-o", "%i"], env=self.env, check=False, timeout=20)
                if p.returncode != 0 or not p.stdout.strip():
                    break
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            p = self.procs.pop(name, None)
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self._old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_conf
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    c = SlurmCluster(cpus=os.cpu_count() or 1).start()
    print(f"SLURM_CONF={c.env['SLURM_CONF']}  (install: {c.install_s} s); Ctrl-C stops it")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
