"""Local servers that zot's development, CI and integration tests run on.

Two servers, both bound to 127.0.0.1 only and keeping all state under the
project's git-ignored `.zot/` folder:

- `KafkaBroker`: Apache Kafka 4.x in KRaft mode (one node that is broker and
  controller), run from the Maven Central jars that `infra/kafka/pom.xml`
  declares, on the machine's Java 17.
- `VictoriaMetrics`: the time-series server from Debian's `victoria-metrics`
  package; it takes InfluxDB line-protocol writes and answers PromQL.

Each server is started detached (its own session, so it outlives a `zot infra up`
and a Ctrl-C in the shell that started it), writes a pid file, and is ready only
once it answers a real request. A server that dies or does not answer in time is
reported with the tail of its log. `infra_up`, `infra_down` and `infra_status`
back the `zot infra up|down|status` command.

Layout under `<root>/.zot/`:

    kafka/libs/                 jars from Maven (+ .pom-sha256 stamp)
    kafka/server-<port>.properties, kafka/data-<port>/, kafka/broker-<port>.{log,pid}
    vm/data-<port>/, vm/vm-<port>.{log,pid}
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOG_TAIL_LINES = 40
# The JVM heap is capped: the machine's cores and memory are shared by several
# engineers and CI, and a test broker needs little.
KAFKA_HEAP = ("-Xms128m", "-Xmx512m")
# The C1 JIT only: C2's compiler threads took ~0.45 of a core for the first minutes of
# every broker (still ~0.1 after five), on a machine whose two cores the broker shares
# with the engine, its tests and the load generators; C1's code costs the broker more
# CPU per request (~+50%), less than that over a test or a bench (docs/engine.md).
KAFKA_JIT = ("-XX:TieredStopAtLevel=1",)
SERVICES = ("kafka", "victoria")
# Kafka (log4j) and VictoriaMetrics (tab-separated level) error lines, and Java causes.
_ERROR_LINE = re.compile(r"\] (ERROR|FATAL) |\t(error|fatal|panic)\t|^Caused by: |^\S+(Exception|Error): ")


class InfraError(RuntimeError):
    """A local server could not be installed, started or stopped."""


# --------------------------------------------------------------------------- helpers


def ensure_debian_package(binary: str, package: str) -> str:
    """Return the path of `binary`, installing Debian's `package` first if missing.

    Uses `apt-get update` then `apt-get install -y` (we run as root on the
    development and CI machines). Raises InfraError with apt's output tail on failure.
    """
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0:
        raise InfraError(
            f"`{binary}` is not installed and installing Debian package `{package}` needs root: "
            f"run `apt-get install -y {package}`"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log.info("installing Debian package %s (for %s)", package, binary)
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", package]):
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
            raise InfraError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    found = shutil.which(binary)
    if not found:
        raise InfraError(f"Debian package `{package}` installed but `{binary}` is still not on PATH")
    return found


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a listening socket could be bound to host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as servers set it, so TIME_WAIT leftovers don't count as taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError:
            return False
    return True


def tail_lines(path: Path, n: int = LOG_TAIL_LINES) -> str:
    """The last `n` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=n))
    except FileNotFoundError:
        return ""


def pid_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (a dead child not yet reaped is gone for us)."""
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is our own dead child; otherwise it would stay a zombie.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    # Field 3 (after the parenthesised command name) is the state.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait(cond: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock across processes (two test sessions may fetch at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- base


class _Server:
    """What both servers share: pid file, log file, detached launch, readiness wait, stop."""

    #: Short name used in messages and in infra_status.
    kind = "server"

    def __init__(self, root: Path, port: int, state_dir: Path, stem: str) -> None:
        self.root = Path(root).resolve()
        self.port = port
        self.state_dir = state_dir
        self.pid_file = state_dir / f"{stem}-{port}.pid"
        self.log_file = state_dir / f"{stem}-{port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # Subclasses say how to recognise their process and whether it is ready.
    def _cmdline_marker(self) -> str:
        raise NotImplementedError

    def answers(self, timeout: float = 2.0) -> bool:
        raise NotImplementedError

    def _alive(self, pid: int) -> bool:
        # Our own child: ask Popen, so its exit status is kept for the error message.
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return pid_alive(pid)

    def pid(self) -> int | None:
        """Pid of this server if its pid file names a live process that is this server."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        # Guard against pid reuse: the process must still be our server.
        if self._alive(pid) and self._cmdline_marker() in _cmdline(pid):
            return pid
        return None

    def is_running(self) -> bool:
        """True if the process this project started for this port is alive."""
        return self.pid() is not None

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        return tail_lines(self.log_file, n)

    def error_lines(self, limit: int = 8) -> list[str]:
        """The first error lines of the log: the cause, which a long shutdown pushes out of the tail."""
        found: list[str] = []
        with contextlib.suppress(FileNotFoundError), self.log_file.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if _ERROR_LINE.search(line):
                    found.append(line.rstrip("\n"))
                    if len(found) >= limit:
                        break
        return found

    def _failure(self, why: str) -> InfraError:
        tail = self.log_tail()
        errors = self.error_lines()
        first = ("first errors in the log:\n" + "\n".join(errors) + "\n") if errors else ""
        return InfraError(
            f"{self.kind} on {HOST}:{self.port} {why}; {first}last lines of {self.log_file}:\n"
            f"{tail if tail else '(log is empty)'}"
        )

    def _launch(self, argv: Sequence[str]) -> int:
        """Start `argv` detached, output to the log file; return its pid."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.log_file.exists():
            # Keep the previous run's log beside the new one; the error tail is this run's.
            self.log_file.replace(self.log_file.with_suffix(".log.prev"))
        with self.log_file.open("wb") as out:
            self._proc = subprocess.Popen(
                list(argv),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group: survives our exit
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        return self._proc.pid

    def _already_ours(self, timeout: float, foreign: str) -> bool:
        """True once a server this project already runs on the port is ready; InfraError(`foreign`)
        if something else answers there; False when the port is ours to start on."""
        if self.is_running():
            pid = self.pid()
            assert pid is not None
            self._await_ready(pid, timeout)
            return True
        if self.answers():
            raise InfraError(foreign)
        return False

    def _await_ready(self, pid: int, timeout: float) -> None:
        """Poll until `answers()`; raise with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._alive(pid):
                self.pid_file.unlink(missing_ok=True)
                code = self._proc.poll() if self._proc is not None and self._proc.pid == pid else None
                raise self._failure(f"exited during start (exit status {code})")
            if self.answers(timeout=2.0):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise self._failure(f"did not answer within {timeout:.0f}s (stopped it)")
            time.sleep(0.5)

    def stop(self, timeout: float = 30) -> bool:
        """Stop the server the pid file names: SIGTERM, then SIGKILL after `timeout` s.

        Returns True if a process was stopped, False if none was running.
        """
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                # The server leads its own process group; signal the whole group.
                os.killpg(pid, sig)
            if _wait(lambda: not self._alive(pid), wait):
                break
            log.warning("%s pid %d ignored %s for %.0fs", self.kind, pid, sig.name, wait)
        else:
            raise InfraError(f"{self.kind} pid {pid} did not exit after SIGKILL")
        if self._proc is not None and self._proc.pid == pid:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=1)
        self._proc = None
        self.pid_file.unlink(missing_ok=True)
        return True

    def purge(self) -> None:
        """Delete this port's data folder, logs and pid file (the server must be stopped)."""
        if self.is_running():
            raise InfraError(f"{self.kind} on {HOST}:{self.port} is running; stop it before purging its state")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for f in self._state_files():
            f.unlink(missing_ok=True)

    def _state_files(self) -> list[Path]:
        return [self.pid_file, self.log_file, self.log_file.with_suffix(".log.prev")]

    @property
    def data_dir(self) -> Path:
        return self.state_dir / f"data-{self.port}"

    def status(self) -> dict[str, object]:
        return {
            "port": self.port,
            "pid": self.pid(),
            "running": self.is_running(),
            "answers": self.answers(),
            "log": str(self.log_file),
        }


# --------------------------------------------------------------------------- Kafka


class KafkaBroker(_Server):
    """A single-node KRaft Kafka (broker + controller) on 127.0.0.1.

    >>> broker = KafkaBroker(Path("."), port=9092)
    >>> broker.start()          # fetches jars on first use, formats storage once
    >>> broker.bootstrap        # '127.0.0.1:9092'
    >>> broker.stop()
    """

    kind = "Kafka broker"

    def __init__(self, root: Path, port: int = 9092, controller_port: int = 9093) -> None:
        root = Path(root).resolve()
        super().__init__(root, port, root / ".zot" / "kafka", "broker")
        self.controller_port = controller_port
        self.pom = self.root / "infra" / "kafka" / "pom.xml"
        self.log4j_config = self.root / "infra" / "kafka" / "log4j2.properties"
        self.libs = self.state_dir / "libs"
        self.properties_file = self.state_dir / f"server-{port}.properties"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def _cmdline_marker(self) -> str:
        return str(self.properties_file)

    def _state_files(self) -> list[Path]:
        return [*super()._state_files(), self.properties_file]

    # ---- jars

    def _pom_hash(self) -> str:
        return hashlib.sha256(self.pom.read_bytes()).hexdigest()

    def _stamp(self) -> Path:
        return self.libs / ".pom-sha256"

    def fetched(self) -> bool:
        """True if libs/ holds the jars for the current pom (stamp matches its hash)."""
        try:
            return self._stamp().read_text().strip() == self._pom_hash() and any(self.libs.glob("kafka_2.13-*.jar"))
        except FileNotFoundError:
            return False

    def fetch(self) -> bool:
        """Copy the pom's jars into .zot/kafka/libs with Maven; no-op when already complete.

        Maven's ~/.m2 is the download cache: an offline attempt comes first, so a
        machine that fetched once never asks the registry again. Returns True if
        Maven ran.
        """
        if self.fetched():
            return False
        with _file_lock(self.state_dir / "fetch.lock"):
            if self.fetched():  # another process fetched while we waited
                return False
            mvn = ensure_debian_package("mvn", "maven")
            ensure_debian_package("java", "openjdk-17-jre-headless")
            staging = self.state_dir / "libs.partial"
            shutil.rmtree(staging, ignore_errors=True)
            base = [mvn, "-q", "-B", "-f", str(self.pom), "dependency:copy-dependencies",
                    f"-DoutputDirectory={staging}"]
            proc = subprocess.run([*base[:2], "-o", *base[2:]], cwd=self.root, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                log.info("fetching Kafka jars from Maven Central (first run on this machine)")
                proc = subprocess.run(base, cwd=self.root, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
                raise InfraError(f"Maven could not fetch the Kafka jars for {self.pom} (exit {proc.returncode}):\n{tail}")
            (staging / ".pom-sha256").write_text(self._pom_hash() + "\n")
            # Replace libs/ whole: jars of an older pom left beside new ones would clash on the classpath.
            shutil.rmtree(self.libs, ignore_errors=True)
            staging.rename(self.libs)
        return True

    # ---- configuration and storage

    def server_properties(self) -> str:
        """The broker's config: one KRaft node, loopback only, single-replica internal topics."""
        listeners = f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": listeners,
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # One node: every internal topic has one replica, or transactions and
            # consumer groups would wait forever for replicas that never come.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # Tests join and leave groups constantly; the default 3 s delay would slow each.
            "group.initial.rebalance.delay.ms": "0",
            # KIP-890's produce-time check that a partition is in the transaction stays on
            # (the default): without it, a produce request retried across a broker restart
            # can land after its transaction ended and open a "hanging" transaction that
            # no marker ever closes, and read_committed readers (recovery!) stop there for
            # good (seen in tests/integration/test_engine_recovery.py's broker restart).
            # It costs each transaction a round trip to the coordinator.
            "auto.create.topics.enable": "true",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.retention.hours": "168",
            "log.segment.bytes": str(256 * 1024 * 1024),
        }
        head = "# Generated by engine/infra.py on each start; edit KafkaBroker.server_properties instead.\n"
        return head + "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, main: str, *args: str) -> list[str]:
        java = ensure_debian_package("java", "openjdk-17-jre-headless")
        return [
            java, *KAFKA_HEAP, *KAFKA_JIT, "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            "-cp", str(self.libs / "*"), main, *args,
        ]

    def _format_marker(self) -> Path:
        return self.data_dir / "zot-controller-port"

    def _format_storage(self) -> None:
        """Format KRaft storage once per data folder (a restart keeps its topics)."""
        meta = self.data_dir / "meta.properties"
        if meta.exists():
            formatted_for = self._format_marker().read_text().strip() if self._format_marker().exists() else ""
            if formatted_for and formatted_for != str(self.controller_port):
                raise InfraError(
                    f"{self.data_dir} was formatted for controller port {formatted_for}, not "
                    f"{self.controller_port}; start with fresh=True to wipe it"
                )
            return
        shutil.rmtree(self.data_dir, ignore_errors=True)
        # A cluster id is a base64url UUID without padding, as `kafka-storage random-uuid` prints.
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        argv = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                          "-c", str(self.properties_file), "--standalone")
        proc = subprocess.run(argv, cwd=self.root, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0 or not meta.exists():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
            raise InfraError(f"formatting Kafka storage in {self.data_dir} failed (exit {proc.returncode}):\n{tail}")
        self._format_marker().write_text(f"{self.controller_port}\n")

    # ---- lifecycle

    def answers(self, timeout: float = 3.0) -> bool:
        """True if a broker at `bootstrap` answers a metadata request and lists a live broker."""
        # Imported here so `zot infra status` works without loading the client at import time.
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaConfigurationError, KafkaError

        # Cheap check first: nothing listening means no answer, without the client's retries.
        try:
            socket.create_connection((HOST, self.port), timeout=timeout).close()
        except OSError:
            return False
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id="zot-infra-probe",
                request_timeout_ms=int(timeout * 1000),
                bootstrap_timeout_ms=int(timeout * 1000),
                reconnect_backoff_max_ms=200,
            )
        except KafkaConfigurationError:
            raise  # our bug, not a broker that is down
        except (KafkaError, OSError, ValueError):
            return False
        try:
            cluster = admin.describe_cluster()
            return any(b.get("port") == self.port and not b.get("is_fenced") for b in cluster.get("brokers", []))
        except (KafkaError, OSError, ValueError):
            return False
        finally:
            with contextlib.suppress(Exception):
                admin.close()

    def start(self, timeout: float = 90, *, fresh: bool = False) -> None:
        """Fetch jars if needed, format storage once, launch the broker, wait until it answers.

        `fresh=True` wipes this port's data folder first. A broker this project
        already runs on the port is left as it is. Raises InfraError with the log
        tail if the broker exits or does not answer within `timeout` seconds.
        """
        if self._already_ours(timeout,
                              f"a Kafka broker not started by this project already answers at {self.bootstrap}"):
            return
        self.fetch()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.properties_file.write_text(self.server_properties())
        self._format_storage()
        pid = self._launch(self._java("kafka.Kafka", str(self.properties_file)))
        self._await_ready(pid, timeout)


# --------------------------------------------------------------------------- VictoriaMetrics


class VictoriaMetrics(_Server):
    """VictoriaMetrics (Debian's package) on 127.0.0.1 with a project-local data folder."""

    kind = "VictoriaMetrics"

    def __init__(self, root: Path, port: int = 8428) -> None:
        root = Path(root).resolve()
        super().__init__(root, port, root / ".zot" / "vm", "vm")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _cmdline_marker(self) -> str:
        return f"-storageDataPath={self.data_dir}"

    def ensure_installed(self) -> str:
        """Path of the `victoria-metrics` binary, installing the Debian package if missing."""
        return ensure_debian_package("victoria-metrics", "victoria-metrics")

    def answers(self, timeout: float = 2.0) -> bool:
        """True if GET /health says OK."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=timeout) as resp:
                return resp.status == 200 and resp.read().strip() == b"OK"
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def argv(self, binary: str) -> list[str]:
        return [
            binary,
            f"-httpListenAddr={HOST}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            # Points newer than this are hidden from range queries as possibly incomplete;
            # 1 s (default 30 s) so what a test or the engine just wrote is visible.
            "-search.latencyOffset=1s",
            # No response cache: a query repeated right after a write must see the new points.
            "-search.disableCache",
            "-retentionPeriod=1y",
            # Shared machine: cap VictoriaMetrics' caches (default is 60% of RAM).
            "-memory.allowedBytes=512MiB",
            "-loggerOutput=stderr",
        ]

    def start(self, timeout: float = 30) -> None:
        """Install if needed, launch, wait until /health says OK (InfraError with log tail otherwise)."""
        if self._already_ours(timeout,
                              f"a VictoriaMetrics not started by this project already answers at {self.url}"):
            return
        binary = self.ensure_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pid = self._launch(self.argv(binary))
        self._await_ready(pid, timeout)

    def flush(self) -> None:
        """Make every point written so far searchable now (VictoriaMetrics buffers ~1 s)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10) as resp:
            resp.read()


# --------------------------------------------------------------------------- zot infra up|down|status


def _pid_files(root: Path) -> Iterable[tuple[str, int]]:
    """(service, port) of every server whose pid file exists under root/.zot."""
    root = Path(root).resolve()
    for service, pattern in (("kafka", "kafka/broker-*.pid"), ("victoria", "vm/vm-*.pid")):
        for f in sorted((root / ".zot").glob(pattern)):
            with contextlib.suppress(ValueError):
                yield service, int(f.stem.rsplit("-", 1)[1])


def _controller_port_of(root: Path, port: int) -> int:
    """The controller port a broker was started with (from its properties file), else port+1."""
    props = Path(root).resolve() / ".zot" / "kafka" / f"server-{port}.properties"
    with contextlib.suppress(FileNotFoundError):
        for line in props.read_text().splitlines():
            if line.startswith("controller.quorum.bootstrap.servers="):
                return int(line.rsplit(":", 1)[1])
    return port + 1


def infra_up(
    root: Path,
    services: Sequence[str] = SERVICES,
    kafka_port: int = 9092,
    vm_port: int = 8428,
) -> dict[str, str]:
    """Start the named services unless something already answers on their ports.

    Returns {service: address}: the Kafka bootstrap and the VictoriaMetrics URL.
    """
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise InfraError(f"unknown service(s) {sorted(unknown)}; allowed: {list(SERVICES)}")
    out: dict[str, str] = {}
    if "kafka" in services:
        broker = KafkaBroker(root, port=kafka_port, controller_port=kafka_port + 1)
        if not broker.answers():
            broker.start()
        out["kafka"] = broker.bootstrap
    if "victoria" in services:
        vm = VictoriaMetrics(root, port=vm_port)
        if not vm.answers():
            vm.start()
        out["victoria"] = vm.url
    return out


def infra_down(root: Path) -> list[str]:
    """Stop every server that a pid file under root/.zot names; return what was stopped."""
    stopped: list[str] = []
    for service, port in _pid_files(root):
        server: _Server
        if service == "kafka":
            server = KafkaBroker(root, port=port, controller_port=_controller_port_of(root, port))
        else:
            server = VictoriaMetrics(root, port=port)
        if server.stop():
            stopped.append(f"{service}@{HOST}:{port}")
    return stopped


def infra_status(root: Path, kafka_port: int = 9092, vm_port: int = 8428) -> dict[str, list[dict[str, object]]]:
    """State of each server with a pid file, plus the default ports: pid, running, answers, log."""
    seen = {("kafka", kafka_port), ("victoria", vm_port), *_pid_files(root)}
    status: dict[str, list[dict[str, object]]] = {s: [] for s in SERVICES}
    for service, port in sorted(seen):
        server: _Server
        if service == "kafka":
            server = KafkaBroker(root, port=port, controller_port=_controller_port_of(root, port))
        else:
            server = VictoriaMetrics(root, port=port)
        status[service].append(server.status())
    return status
