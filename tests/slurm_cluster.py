"""A real one-node SLURM cluster on 127.0.0.1 for tests: munged, mariadbd, slurmdbd, slurmctld, slurmd.

Debian's slurm-wlm, munge, slurmdbd and mariadb-server (installed by scripts/setup.sh). Every
daemon runs in the foreground as a child of the test process and is stopped by its PID; all
state, sockets and logs live in a temporary folder. Only /etc/slurm/{slurm,gres,slurmdbd}.conf
are symlinks into it: the executor plugin's job step strips SLURM_CONF before its nested srun,
so the configuration must sit where the tools look by default.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ETC = Path("/etc/slurm")
CONF_FILES = ("slurm.conf", "gres.conf", "slurmdbd.conf")
BINARIES = ("munged", "mariadb-install-db", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct", "sacctmgr")
CLUSTER = "vlalign-test"
ACCOUNT = "vlalign"
PARTITION = "debug"
OWNER = "owner.pid"  # the test process that started a cluster, in the cluster's folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_memory_mb() -> int:
    """What slurmd itself measures: a node configured with more is drained as invalid."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    return int(next(w for w in out.split() if w.startswith("RealMemory=")).split("=")[1])


@dataclass
class Cluster:
    root: Path
    cpus: int
    memory_mb: int
    account: str = ACCOUNT
    partition: str = PARTITION
    daemons: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def log(self, name: str) -> Path:
        return self.root / "log" / f"{name}.log"

    def logs_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in sorted((self.root / "log").glob("*")))

    def start(self, name: str, argv: list[str], env: dict | None = None) -> None:
        with open(self.log(f"{name}.out"), "w") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                    start_new_session=True)  # fmt: skip
        self.daemons.append((name, proc))

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stdout}{result.stderr}\n{self.logs_tail()}")
        return result

    def wait_for(self, what: str, ready, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.daemons:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}\n{self.logs_tail()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}\n{self.logs_tail()}")

    def stop(self) -> None:
        """Cancel leftover jobs, then stop the daemons newest first, each by its PID."""
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self.daemons):
            self.run("scancel", "--user", "root", check=False)
            # slurmd must still be up to end the cancelled jobs' steps.
            deadline = time.monotonic() + 30
            while self.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for name, proc in reversed(self.daemons):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        for name in CONF_FILES:
            link = ETC / name
            if link.is_symlink() and Path(os.readlink(link)).is_relative_to(self.root):
                link.unlink()


def check_prerequisites() -> None:
    """No silent skip: a machine without the cluster software or root fails, and says how to fix it."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.fail(f"SLURM test cluster: missing {', '.join(missing)}; run `make setup` as root (scripts/setup.sh)")
    if os.geteuid() != 0:
        pytest.fail("SLURM test cluster: slurmd must run as root")
    for name in CONF_FILES:
        link = ETC / name
        # A symlink whose target is gone, or whose target is a test cluster's folder whose test process has
        # ended, is left over from a killed test run; anything else is a real site config, or a live test cluster.
        if link.is_symlink() and not link.exists():
            link.unlink()
        elif link.is_symlink() and is_test_cluster(link.resolve().parent):
            reclaim_leftover(link)
        elif link.exists() or link.is_symlink():
            pytest.fail(f"SLURM test cluster: {link} exists; this test will not replace a real SLURM configuration")


def running(pid: int, name: str) -> bool:
    """Whether process `pid` runs and is `name` (a PID from a killed run may since belong to another program)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(name.encode())
    except OSError:
        return False


def is_test_cluster(root: Path) -> bool:
    try:
        return f"ClusterName={CLUSTER}\n" in (root / "slurm.conf").read_text()
    except OSError:
        return False


def reclaim_leftover(link: Path) -> None:
    """Stop the daemons a killed test run left behind (they run in their own sessions) and remove its link."""
    root = link.resolve().parent
    owner = int((root / OWNER).read_text()) if (root / OWNER).exists() else None
    if owner not in (None, os.getpid()) and Path(f"/proc/{owner}").exists():
        pytest.fail(f"SLURM test cluster: {link} belongs to the test cluster of process {owner}, still running")
    for pid_file in sorted((root / "run").glob("*.pid")):
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if running(pid, pid_file.stem):
            os.kill(pid, signal.SIGKILL)
    link.unlink()


def write_configs(cluster: Cluster, ports: dict[str, int]) -> None:
    r = cluster.root
    for sub in ("state", "spool", "log", "run"):
        (r / sub).mkdir(parents=True, exist_ok=True)
    auth = f"AuthType=auth/munge\nAuthInfo=socket={r / 'run' / 'munge.socket'}\n"
    (r / "slurm.conf").write_text(
        f"ClusterName={CLUSTER}\n"
        "SlurmctldHost=localhost(127.0.0.1)\n"
        f"SlurmctldPort={ports['slurmctld']}\nSlurmdPort={ports['slurmd']}\n"
        # Keep both daemons on the loopback address, whatever the machine's host name resolves to.
        "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny\n"
        "SlurmUser=root\nSlurmdUser=root\n"
        f"{auth}CredType=cred/munge\n"
        f"StateSaveLocation={r / 'state'}\nSlurmdSpoolDir={r / 'spool'}\n"
        f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}\nSlurmdPidFile={r / 'run' / 'slurmd.pid'}\n"
        f"SlurmctldLogFile={cluster.log('slurmctld')}\nSlurmdLogFile={cluster.log('slurmd')}\n"
        # No cgroup hierarchy is delegated to us: track processes by their parent PIDs.
        "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/linux\n"
        "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\n"
        # Without a default a bare sbatch job would take the node's whole memory.
        "DefMemPerCPU=1000\n"
        "MpiDefault=none\nReturnToService=2\nSchedulerType=sched/backfill\n"
        # The GPU the profile asks for: scheduled and accounted like a real one, backed by no device.
        "GresTypes=gpu\nAccountingStorageTRES=gres/gpu\n"
        "AccountingStorageType=accounting_storage/slurmdbd\n"
        f"AccountingStorageHost=localhost\nAccountingStoragePort={ports['slurmdbd']}\n"
        # For munge, the password is the munged socket: clients reach slurmdbd through ours too.
        f"AccountingStoragePass={r / 'run' / 'munge.socket'}\n"
        # The plugin writes the rule name into the job comment: keep it for sacct.
        "AccountingStoreFlags=job_comment\n"
        f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cluster.cpus} RealMemory={cluster.memory_mb}"
        " Gres=gpu:1 State=UNKNOWN\n"
        f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n"
    )
    # A gres entry without a File makes the node invalid; /dev/null stands in for the device.
    (r / "gres.conf").write_text("AutoDetect=off\nNodeName=localhost Name=gpu File=/dev/null\n")
    dbd = r / "slurmdbd.conf"
    dbd.write_text(
        f"{auth}DbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={ports['slurmdbd']}\nSlurmUser=root\n"
        f"PidFile={r / 'run' / 'slurmdbd.pid'}\nLogFile={cluster.log('slurmdbd')}\n"
        # MariaDB through its Unix socket only (MYSQL_UNIX_PORT): no database port is opened.
        "StorageType=accounting_storage/mysql\nStorageHost=localhost\nStorageUser=root\nStorageLoc=slurm_acct_db\n"
    )
    dbd.chmod(0o600)  # slurmdbd refuses a readable config (it may hold the database password)


def start_cluster(root: Path) -> Cluster:
    cluster = Cluster(root=root, cpus=os.cpu_count() or 1, memory_mb=node_memory_mb())
    ports = {name: free_port() for name in ("slurmctld", "slurmd", "slurmdbd")}
    write_configs(cluster, ports)
    (root / OWNER).write_text(f"{os.getpid()}\n")
    run_dir = root / "run"
    try:
        for name in CONF_FILES:
            (ETC / name).symlink_to(root / name)

        key = run_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        cluster.start("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                                 f"--socket={run_dir / 'munge.socket'}", f"--pid-file={run_dir / 'munged.pid'}",
                                 f"--log-file={cluster.log('munged')}", f"--seed-file={run_dir / 'munged.seed'}"])  # fmt: skip
        cluster.wait_for("munged", lambda: (run_dir / "munge.socket").exists())

        db_socket = run_dir / "mysqld.sock"
        datadir = root / "mariadb"
        cluster.run("mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
                    "--auth-root-authentication-method=socket", "--skip-test-db")  # fmt: skip
        cluster.start("mariadbd", ["mariadbd", "--no-defaults", f"--datadir={datadir}", f"--socket={db_socket}",
                                   "--skip-networking", "--user=root", f"--pid-file={run_dir / 'mariadbd.pid'}",
                                   f"--log-error={cluster.log('mariadbd')}"])  # fmt: skip
        cluster.wait_for("mariadbd", lambda: db_socket.exists())

        cluster.start("slurmdbd", ["slurmdbd", "-D"], env={"MYSQL_UNIX_PORT": str(db_socket)})
        cluster.wait_for("slurmdbd", lambda: cluster.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0)
        # A real account, so the plugin's account validation (sacctmgr) runs as on a site cluster.
        cluster.run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        cluster.run("sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={CLUSTER}")
        cluster.run("sacctmgr", "-i", "add", "user", "root", f"account={ACCOUNT}", f"cluster={CLUSTER}")

        cluster.start("slurmctld", ["slurmctld", "-D", "-i"])
        # The machine's host name is not the node's name: slurmd must be told which node it is.
        cluster.start("slurmd", ["slurmd", "-D", "-N", "localhost"])
        cluster.wait_for(
            "the node to be idle",
            lambda: cluster.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.strip() == "idle",
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    check_prerequisites()
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
