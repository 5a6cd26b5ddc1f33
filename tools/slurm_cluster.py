"""A one-node SLURM cluster on this machine, in one folder, for the tests and for trying the cluster path by hand.

    python tools/slurm_cluster.py start /tmp/slurm      # munged, slurmctld, slurmd in the background
    export SLURM_CONF=/tmp/slurm/slurm.conf              # what `start` prints; sbatch/squeue/scancel use it
    sbatch --wrap 'hostname'; squeue; scontrol show node
    python tools/slurm_cluster.py stop /tmp/slurm       # cancels the jobs, stops the daemons

Everything lives in the folder: a fresh munge key and munge socket, `slurm.conf` for one node named
`unimat-node` (this machine's cores and memory, on 127.0.0.1) in one partition `debug`, SLURM's state, spool
and logs (`log/`, with the finished jobs in `log/jobcomp.log`). The daemons run in the foreground of their own
process groups (no systemd, no /etc/slurm), on free loopback ports, so several clusters can coexist. They need
root (slurmd starts jobs as their owner); Debian packages `slurm-wlm` and `munge` (system-packages.txt).
Jobs run at niceness 10 (`--nice`) so a test cluster never competes with the machine's real work, each bound to
the cores SLURM gave it (task/affinity: a 1-CPU job sees one core, so torch and Dask size themselves to it).

There is no accounting database (slurmdbd + MySQL), so `sacct` is not available: finished jobs are in
`scontrol show job` for `MinJobAge` (10 minutes) and in `log/jobcomp.log` for good.

Standard library only: the tests load this file (tests/cluster/conftest.py), a user runs it with any python3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE = "unimat-node"
PARTITION = "debug"
DAEMONS = ("munged", "slurmctld", "slurmd")
PACKAGES = {"munged": "munge", "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sbatch": "slurm-wlm"}


def missing_programs() -> list[str]:
    """Debian packages whose programs are not on PATH (empty when the cluster can start)."""
    return sorted({pkg for prog, pkg in PACKAGES.items() if shutil.which(prog) is None})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_size() -> tuple[int, int]:
    """(cores, memory in MB) of this machine, as the node declares them (slurmd checks them at start)."""
    meminfo = Path("/proc/meminfo").read_text().split()
    mem_mb = int(meminfo[meminfo.index("MemTotal:") + 1]) // 1024
    return len(os.sched_getaffinity(0)), int(mem_mb * 0.9)


SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes, the last a NUL


@dataclass
class SlurmCluster:
    root: Path
    _procs: dict = field(default_factory=dict, repr=False, compare=False)  # daemons this process started

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def jobcomp_log(self) -> Path:
        return self.log_dir / "jobcomp.log"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) with SLURM_CONF pointing at this cluster."""
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """A SLURM client command (sbatch, squeue, scontrol, scancel) against this cluster."""
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    # --- configuration -------------------------------------------------------------------------------

    def check_socket_paths(self) -> None:
        """slurmd puts each job step's Unix socket in its spool folder (`<node>_<job>.<step>`, ~30 characters);
        a socket path has at most 107, and past it jobs hang PENDING with the reason only in slurmd's log."""
        longest = self.root.resolve() / "spool" / f"{NODE}_{'9' * 8}.4294967291"
        if len(str(longest)) > SOCKET_PATH_MAX:
            raise RuntimeError(f"cluster folder {self.root} is too deep for slurmd's job sockets ({len(str(longest))} "
                               f"> {SOCKET_PATH_MAX} characters): choose a shorter path")

    def write_config(self, cpus: int | None = None, memory_mb: int | None = None) -> None:
        cores, mem = machine_size()
        cpus, memory_mb = cpus or cores, memory_mb or mem
        user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        ports = {"ctld": free_port(), "slurmd": free_port()}
        r = self.root
        self.conf.write_text(f"""\
# one-node test cluster written by tools/slurm_cluster.py; SLURM_CONF={self.conf}
ClusterName=unimat
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmctldPort={ports["ctld"]}
SlurmdPort={ports["slurmd"]}
SlurmUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={r}/log/jobcomp.log
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
        (self.root / "cluster.json").write_text(json.dumps({"cpus": cpus, "memory_mb": memory_mb, **ports}))

    # --- daemons -------------------------------------------------------------------------------------

    def _pid_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.proc"   # our own record (the daemons' pid files are written late)

    def _spawn(self, daemon: str, cmd: list[str], nice: int = 0) -> None:
        log = open(self.log_dir / f"{daemon}.out", "ab")
        preexec = (lambda: os.nice(nice)) if nice else None
        proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=preexec)
        log.close()
        self._procs[daemon] = proc
        self._pid_file(daemon).write_text(str(proc.pid))

    def _alive(self, daemon: str) -> bool:
        if daemon in self._procs:
            return self._procs[daemon].poll() is None
        pid = self._pid(daemon)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{pid}/stat")
        return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")

    def _pid(self, daemon: str) -> int | None:
        path = self._pid_file(daemon)
        return int(path.read_text()) if path.exists() else None

    def start(self, cpus: int | None = None, memory_mb: int | None = None, nice: int = 10, timeout: float = 60) -> None:
        """Write the configuration and start munged, slurmctld and slurmd; return when the node is idle."""
        if missing_programs():
            raise RuntimeError(f"missing Debian packages {missing_programs()}: run tools/install-system-deps.sh")
        if os.geteuid() != 0:
            raise RuntimeError("slurmd must run as root (it starts jobs as their owner): use sudo")
        if any(self._alive(d) for d in DAEMONS):
            raise RuntimeError(f"a cluster is already running in {self.root}: stop it first")
        self.check_socket_paths()
        self.write_config(cpus, memory_mb)
        munge = self.root / "munge"
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={munge}/munge.socket",
                               f"--key-file={munge}/munge.key", f"--pid-file={munge}/munged.pid",
                               f"--seed-file={munge}/munged.seed", f"--log-file={self.log_dir}/munged.log"])
        self._wait(lambda: (munge / "munge.socket").exists(), "munged", 15)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run("scontrol", "ping", check=False).stdout.count("is UP") > 0, "slurmctld", timeout)
        # the node runs its jobs at niceness `nice` (slurmstepd and the jobs inherit slurmd's), whatever the
        # niceness of the caller: not less (they never compete with the machine's real work), not more (a test
        # run under `nice -n 5` would otherwise starve its own jobs at 15)
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", NODE], nice=max(0, nice - os.nice(0)))
        self._wait(self.node_idle, "slurmd", timeout)

    def node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
        return out == ["idle"]

    def _wait(self, ready, daemon: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(daemon):
                raise RuntimeError(f"{daemon} exited:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise TimeoutError(f"{daemon} not ready after {timeout:.0f} s:\n{self.logs()}")

    def logs(self, n: int = 2000) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")) + sorted(self.log_dir.glob("*.out")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    def job_pids(self) -> list[int]:
        """Processes of this cluster's jobs (slurmstepd and what it started: each job has its own session)."""
        marker = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != os.getpid():
                try:
                    if marker in (proc / "environ").read_bytes().split(b"\0"):
                        pids.append(int(proc.name))
                except OSError:
                    pass
        return pids

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job, stop the daemons (gracefully, then by force), and leave no process behind."""
        if self._alive("slurmctld"):
            self.run("scancel", "--full", f"--partition={PARTITION}", check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
            self.run("scontrol", "shutdown", check=False)
        for daemon in reversed(DAEMONS):
            pid = self._pid(daemon)
            if pid is None:
                continue
            for sig, wait in ((signal.SIGTERM, timeout / 3), (signal.SIGKILL, 5)):
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and self._alive(daemon):
                    time.sleep(0.2)
                if not self._alive(daemon):
                    break
            self._pid_file(daemon).unlink(missing_ok=True)
            self._procs.pop(daemon, None)
        for pid in self.job_pids():  # a job step that outlived its slurmd
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def status(self) -> dict[str, bool]:
        return {daemon: self._alive(daemon) for daemon in DAEMONS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/slurm_cluster.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("root", type=Path, help="folder of the cluster (created)")
    parser.add_argument("--cpus", type=int, help="CPUs of the node (default: this machine's)")
    parser.add_argument("--memory-mb", type=int, help="memory of the node (default: 90%% of this machine's)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the jobs (default 10)")
    args = parser.parse_args(argv)
    cluster = SlurmCluster(args.root.resolve())
    if args.command == "start":
        try:
            cluster.start(args.cpus, args.memory_mb, args.nice)
        except (RuntimeError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            cluster.stop()
            return 1
        print(f"export SLURM_CONF={cluster.conf}")
        print(f"# partition {PARTITION}, node {NODE}; stop with: {sys.argv[0]} stop {cluster.root}", file=sys.stderr)
    elif args.command == "stop":
        cluster.stop()
    else:
        state = cluster.status()
        print(" ".join(f"{d}={'up' if up else 'down'}" for d, up in state.items()))
        return 0 if all(state.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
