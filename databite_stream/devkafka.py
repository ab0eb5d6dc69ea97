"""A real Apache Kafka broker for development, tests, the demo and the benchmarks.

Owns: resolving the broker's jars from Maven Central (``mvn dependency:copy-dependencies`` on a
generated POM) into a cached, git-ignored folder; formatting KRaft storage; starting one node
(broker+controller) or a three-node KRaft quorum on 127.0.0.1 with free ports; a readiness check
that makes a real admin metadata call; stopping with SIGTERM then SIGKILL.

Invariants: nothing is downloaded except from Maven Central (through the user's Maven); every
process we start is in its own process group and is stopped by :meth:`KafkaCluster.stop`; when
``DATABITE_BROKER=host:port`` is set, no broker is started and that one is used.

CLI: ``python -m databite_stream.devkafka {fetch,start,stop,status}`` (also ``databite-stream
kafka ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = (
    "DEFAULT_KAFKA_VERSION",
    "BrokerError",
    "KafkaCluster",
    "KafkaNode",
    "fetch_jars",
    "kafka_home",
    "main",
    "wait_until_ready",
)

DEFAULT_KAFKA_VERSION = "4.0.1"
SUPPORTED_VERSIONS = ("4.0.1", "4.0.2", "3.9.1")
_LOG4J2_VERSION = "2.24.3"

#: Settings shared by every node we start; ``docker-compose.yml`` mirrors the broker ones.
_SERVER_DEFAULTS: dict[str, str] = {
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.num.partitions": "4",
    "num.partitions": "1",
    "auto.create.topics.enable": "true",
    "log.cleaner.backoff.ms": "1000",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    "log.retention.check.interval.ms": "5000",
}

_LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = STDOUT
logger.req.name = kafka.request.logger
logger.req.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = info
"""

_LOG4J1_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or reached; the message says what to do."""


def kafka_home() -> Path:
    """Cache folder for jars and run directories (``DATABITE_KAFKA_HOME``, default ``./.kafka``)."""
    return Path(os.environ.get("DATABITE_KAFKA_HOME", ".kafka")).resolve()


def _is_kafka4(version: str) -> bool:
    return int(version.split(".")[0]) >= 4


def _pom(version: str) -> str:
    """The POM whose runtime dependencies are exactly the broker's classpath.

    kafka_2.13 holds both entry points (``kafka.Kafka``, ``kafka.tools.StorageTool``). Its POM
    does not bring a logging backend, and Kafka 3.9/4.0 crash at start without one, so we add
    log4j2 (4.x) or reload4j (3.9) as the release tarball does.
    """
    if _is_kafka4(version):
        backend = "".join(
            f"<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>{a}</artifactId>"
            f"<version>{_LOG4J2_VERSION}</version></dependency>"
            for a in ("log4j-api", "log4j-core", "log4j-slf4j-impl")
        )
    else:
        backend = (
            "<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>"
            "<version>1.7.36</version></dependency>"
            "<dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId>"
            "<version>1.2.25</version></dependency>"
        )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.databite</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
      <exclusions>
        <exclusion><groupId>ch.qos.logback</groupId><artifactId>*</artifactId></exclusion>
        <exclusion><groupId>log4j</groupId><artifactId>log4j</artifactId></exclusion>
        <exclusion><groupId>org.slf4j</groupId><artifactId>slf4j-log4j12</artifactId></exclusion>
      </exclusions>
    </dependency>
    {backend}
  </dependencies>
</project>
"""


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"`{tool}` is not on PATH: {hint}")
    return path


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return _require("java", "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre)")


def fetch_jars(version: str = DEFAULT_KAFKA_VERSION, *, home: Path | None = None) -> Path:
    """Resolve the broker jars for ``version`` into ``<home>/libs-<version>`` (cached)."""
    if version not in SUPPORTED_VERSIONS:
        raise BrokerError(
            f"Kafka {version} is not supported here; choose one of {', '.join(SUPPORTED_VERSIONS)}"
        )
    home = home or kafka_home()
    libs = home / f"libs-{version}"
    done = libs / ".complete"
    if done.exists():
        return libs
    mvn = _require("mvn", "install Apache Maven (Debian: apt-get install maven)")
    home.mkdir(parents=True, exist_ok=True)
    pom = home / f"pom-{version}.xml"
    pom.write_text(_pom(version))
    tmp = home / f"libs-{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        # name the plugin version: Maven 3.8's default binding is an old plugin
        "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise BrokerError(f"could not resolve Kafka {version} jars from Maven Central:\n{tail}")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    done.write_text(version)
    return libs


def _free_ports(n: int) -> list[int]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class KafkaNode:
    """One KRaft node (broker and controller in one JVM)."""

    node_id: int
    port: int
    controller_port: int
    data_dir: str
    log_file: str
    config_file: str
    pid: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            # reap if it is our zombie child, then probe
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(self.pid, os.WNOHANG)
                if done == self.pid:
                    return False
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def last_log_lines(self, n: int = 30) -> str:
        try:
            lines = Path(self.log_file).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no broker log was written)"
        return "\n".join(lines[-n:])


@dataclass
class KafkaCluster:
    """One node, or a three-node KRaft quorum, of real Apache Kafka on loopback.

    Args:
        nodes: 1 (default) or 3. With 3, every node is broker and controller (a 3-voter quorum),
            and internal topics use replication factor 3 so that one node can die.
        version: Apache Kafka version (``DATABITE_KAFKA_VERSION``, default 4.0.1; 3.9.1 works).
        run_dir: where configs, data and logs go (default: a fresh folder under ``kafka_home()``).
        heap: JVM max heap per node.
        fast_jit: keep the JIT at C1 (faster start on 2 cores); disable for throughput benchmarks.
    """

    nodes: int = 1
    version: str = field(
        default_factory=lambda: os.environ.get("DATABITE_KAFKA_VERSION", DEFAULT_KAFKA_VERSION)
    )
    run_dir: str = ""
    heap: str = "768m"
    fast_jit: bool = True
    members: list[KafkaNode] = field(default_factory=list)
    cluster_id: str = ""
    start_seconds: float = 0.0

    @property
    def bootstrap(self) -> str:
        return ",".join(m.bootstrap for m in self.members)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, *, timeout: float = 90.0) -> KafkaCluster:
        if self.nodes not in (1, 3):
            raise BrokerError("a local cluster has 1 or 3 nodes")
        t0 = time.monotonic()
        libs = fetch_jars(self.version)
        java = _java()
        run = Path(self.run_dir or kafka_home() / "run" / f"{int(time.time())}-{os.getpid()}")
        run.mkdir(parents=True, exist_ok=True)
        self.run_dir = str(run)
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        ports = _free_ports(2 * self.nodes)
        self.members = [
            KafkaNode(
                node_id=i + 1,
                port=ports[2 * i],
                controller_port=ports[2 * i + 1],
                data_dir=str(run / f"node-{i + 1}" / "data"),
                log_file=str(run / f"node-{i + 1}" / "broker.log"),
                config_file=str(run / f"node-{i + 1}" / "server.properties"),
            )
            for i in range(self.nodes)
        ]
        log_cfg = self._write_logging_config(run)
        voters = ",".join(f"{m.node_id}@127.0.0.1:{m.controller_port}" for m in self.members)
        rf = str(self.nodes)
        for m in self.members:
            Path(m.data_dir).mkdir(parents=True, exist_ok=True)
            props = {
                "process.roles": "broker,controller",
                "node.id": str(m.node_id),
                # static voters: valid on 3.9 and 4.x, and `format` then needs no --standalone
                "controller.quorum.voters": voters,
                "listeners": (
                    f"PLAINTEXT://127.0.0.1:{m.port},CONTROLLER://127.0.0.1:{m.controller_port}"
                ),
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{m.port}",
                "log.dirs": m.data_dir,
                "offsets.topic.replication.factor": rf,
                "transaction.state.log.replication.factor": rf,
                "transaction.state.log.min.isr": "2" if self.nodes == 3 else "1",
                "default.replication.factor": rf,
                "min.insync.replicas": "2" if self.nodes == 3 else "1",
                **_SERVER_DEFAULTS,
            }
            if _is_kafka4(self.version):
                props["share.coordinator.state.topic.replication.factor"] = rf
                props["share.coordinator.state.topic.min.isr"] = "1"
            Path(m.config_file).write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            self._format(java, libs, log_cfg, m)
        for m in self.members:
            self._launch(java, libs, log_cfg, m)
        try:
            wait_until_ready(self, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _write_logging_config(self, run: Path) -> str:
        if _is_kafka4(self.version):
            path = run / "log4j2.properties"
            path.write_text(_LOG4J2_PROPERTIES)
            return f"-Dlog4j2.configurationFile={path}"
        path = run / "log4j.properties"
        path.write_text(_LOG4J1_PROPERTIES)
        return f"-Dlog4j.configuration=file:{path}"

    def _format(self, java: str, libs: Path, log_cfg: str, m: KafkaNode) -> None:
        cmd = [
            java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            log_cfg,
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={self.cluster_id}",  # '=' form: a base64url id may start with '-'
            "--config",
            m.config_file,
            "--ignore-formatted",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise BrokerError(f"formatting KRaft storage for node {m.node_id} failed:\n{tail}")

    def _launch(self, java: str, libs: Path, log_cfg: str, m: KafkaNode) -> None:
        cmd = [
            java,
            "-Xms256m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:MaxInlineLevel=15",
            "-Djava.awt.headless=true",
            *(["-XX:TieredStopAtLevel=1"] if self.fast_jit else []),
            f"-Dkafka.logs.dir={Path(m.log_file).parent}",
            log_cfg,
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            m.config_file,
        ]
        with open(m.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: Ctrl-C in a terminal is ours
            )
        m.pid = proc.pid

    def stop_node(self, node_id: int, *, hard: bool = False, grace: float = 30.0) -> None:
        """Stop one node: SIGTERM (controlled shutdown) then SIGKILL after ``grace`` s."""
        m = self.members[node_id - 1]
        _terminate(m, hard=hard, grace=grace)

    def restart_node(self, node_id: int, *, timeout: float = 90.0) -> None:
        """Start a stopped node again with its data and ports."""
        m = self.members[node_id - 1]
        if m.alive():
            raise BrokerError(f"node {node_id} is still running")
        log_cfg = self._write_logging_config(Path(self.run_dir))
        self._launch(_java(), fetch_jars(self.version), log_cfg, m)
        wait_until_ready(self, timeout=timeout)

    def stop(self, *, grace: float = 30.0, keep_data: bool = False) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``grace`` s) and delete its data."""
        for m in self.members:
            with contextlib.suppress(OSError):
                if m.pid is not None and m.alive():
                    os.killpg(m.pid, signal.SIGTERM)
        for m in self.members:
            _terminate(m, hard=False, grace=grace)
        if not keep_data:
            for m in self.members:
                shutil.rmtree(m.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- persistence for the CLI ----------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> KafkaCluster:
        raw = json.loads(text)
        members = [KafkaNode(**m) for m in raw.pop("members")]
        return cls(**raw, members=members)


def _terminate(m: KafkaNode, *, hard: bool, grace: float) -> None:
    if m.pid is None:
        return
    sig = signal.SIGKILL if hard else signal.SIGTERM
    with contextlib.suppress(OSError):
        os.killpg(m.pid, sig)
    deadline = time.monotonic() + grace
    while m.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if m.alive():
        with contextlib.suppress(OSError):
            os.killpg(m.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while m.alive() and time.monotonic() < deadline:
            time.sleep(0.05)


async def _describe(bootstrap: str) -> int:
    """Number of brokers the cluster reports, from a real admin metadata call."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        desc = await admin.describe_cluster()
        return len(desc.get("brokers", []))
    finally:
        await admin.close()


def wait_until_ready(cluster: KafkaCluster, *, timeout: float = 90.0) -> None:
    """Block until every node answers an admin metadata call; fail fast if a JVM dies."""
    deadline = time.monotonic() + timeout
    last_error = ""
    # aiokafka logs every refused connection at ERROR; during start-up that is expected noise
    client_log = logging.getLogger("aiokafka")
    saved_level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        _poll_ready(cluster, deadline)
        return
    except _NotReady as exc:
        last_error = str(exc)
    finally:
        client_log.setLevel(saved_level)
    logs = "\n".join(f"--- node {m.node_id}\n{m.last_log_lines(15)}" for m in cluster.members)
    raise BrokerError(
        f"Kafka did not become ready within {timeout:.0f}s ({last_error}); last log lines:\n{logs}"
    )


class _NotReady(Exception):
    pass


def _poll_ready(cluster: KafkaCluster, deadline: float) -> None:
    last_error = "no answer"
    while time.monotonic() < deadline:
        for m in cluster.members:
            if not m.alive():
                raise BrokerError(
                    f"Kafka node {m.node_id} exited during start-up; last log lines "
                    f"({m.log_file}):\n{m.last_log_lines()}"
                )
        try:
            if all(
                asyncio.run(_describe(m.bootstrap)) >= len(cluster.members) for m in cluster.members
            ):
                return
        except Exception as exc:  # not ready yet: any client error means "try again"
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    raise _NotReady(last_error)


# -- CLI -------------------------------------------------------------------------------------


def _state_file() -> Path:
    return kafka_home() / "cluster.json"


@contextlib.contextmanager
def running_cluster(nodes: int = 1) -> Iterator[str]:
    """Yield a bootstrap string: ``DATABITE_BROKER`` if set, else a cluster we start and stop."""
    external = os.environ.get("DATABITE_BROKER")
    if external:
        yield external
        return
    cluster = KafkaCluster(nodes=nodes).start()
    try:
        yield cluster.bootstrap
    finally:
        cluster.stop()


def _cmd_fetch(args: argparse.Namespace) -> int:
    libs = fetch_jars(args.version)
    print(f"Kafka {args.version} jars ready in {libs}")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    state = _state_file()
    if state.exists():
        old = KafkaCluster.from_json(state.read_text())
        if any(m.alive() for m in old.members):
            print(f"a local Kafka is already running at {old.bootstrap}")
            return 0
    cluster = KafkaCluster(nodes=args.nodes, version=args.version).start(timeout=args.timeout)
    state.write_text(cluster.to_json())
    print(f"Kafka {cluster.version} ready in {cluster.start_seconds:.1f}s")
    print(f"DATABITE_BROKER={cluster.bootstrap}")
    return 0


def _cmd_stop(_: argparse.Namespace) -> int:
    state = _state_file()
    if not state.exists():
        print("no local Kafka is recorded as running")
        return 0
    cluster = KafkaCluster.from_json(state.read_text())
    cluster.stop()
    state.unlink()
    print("local Kafka stopped")
    return 0


def _cmd_status(_: argparse.Namespace) -> int:
    state = _state_file()
    if not state.exists():
        print("not running")
        return 3
    cluster = KafkaCluster.from_json(state.read_text())
    for m in cluster.members:
        print(f"node {m.node_id}: {'up' if m.alive() else 'DOWN'} {m.bootstrap} (pid {m.pid})")
    return 0 if all(m.alive() for m in cluster.members) else 1


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="databite-stream kafka",
        description="Run a local Apache Kafka (KRaft) from Maven Central jars, on 127.0.0.1.",
    )
    sub = parser.add_subparsers(dest="kafka_cmd", required=True, metavar="COMMAND")
    version_help = f"Kafka version ({', '.join(SUPPORTED_VERSIONS)}); env DATABITE_KAFKA_VERSION"
    default_version = os.environ.get("DATABITE_KAFKA_VERSION", DEFAULT_KAFKA_VERSION)
    p = sub.add_parser("fetch", help="resolve the broker jars into the cache (needs mvn)")
    p.add_argument("--version", default=default_version, help=version_help)
    p.set_defaults(func=_cmd_fetch)
    p = sub.add_parser("start", help="start a local broker in the background and print its address")
    p.add_argument("--version", default=default_version, help=version_help)
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="1 node or a 3-node quorum")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p.set_defaults(func=_cmd_start)
    p = sub.add_parser("stop", help="stop the local broker started with `start`")
    p.set_defaults(func=_cmd_stop)
    p = sub.add_parser("status", help="show whether the local broker is up (exit 0 if all up)")
    p.set_defaults(func=_cmd_status)
    return parser


def run_cli(args: argparse.Namespace) -> int:
    try:
        rc: int = args.func(args)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
