#!/usr/bin/env bash
# Apache Kafka for the tests, from its Maven Central jars (no tarball, no Docker).
#
#   broker.sh classpath               resolve the broker's jars once per machine; print their folder
#   broker.sh start DIR [NODES]       start a KRaft cluster of NODES (1, the default, or 3) with its
#                                     data in DIR (made fresh), wait until it is ready, print its
#                                     environment (also written to DIR/env)
#   broker.sh stop DIR                stop every node of DIR (SIGTERM, SIGKILL after 30 s)
#   broker.sh node DIR ID ACTION      one node: stop (SIGTERM, waits for the exit), kill (SIGKILL),
#                                     pause (SIGSTOP), resume (SIGCONT), start (again, on its data
#                                     directory and ports; waits for its started line)
#   broker.sh ready DIR               the readiness check again (every node registered, a group
#                                     round-trip, a transaction)
#
# The environment printed by `start`:
#   ACS_TEST_BROKERS      bootstrap servers (every node)
#   ACS_TEST_BROKER_NAME  e.g. "Apache Kafka 4.1.1 (1 node)"
#   ACS_TEST_CLUSTER_DIR  DIR
#
# One node is broker and controller at once; internal topics have replication factor 1 and min
# ISR 1. Three nodes form one static controller quorum; internal and default topics get
# replication factor 3 and min ISR 2. Every node listens on free loopback ports.
#
# When ACS_BROKER_OWNER_PID names a process, a watcher stops the cluster once that process has
# exited: a test run that is killed or interrupted leaves no broker behind.
#
# Settings (environment): ACS_KAFKA_CACHE (default ~/.cache/acs-stream/kafka) holds the jars;
# ACS_BROKER_START_TIMEOUT (seconds, default 90) bounds a start and the readiness check.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${ACS_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acs-stream/kafka}"
timeout="${ACS_BROKER_START_TIMEOUT:-90}"
log4j="-Dlog4j2.configurationFile=${here}/log4j2.properties"

die() {
  echo "broker.sh: $*" >&2
  exit 1
}

# The folder of the broker's jars, resolved by Maven on first use. Keyed by the POM's content:
# another broker version (or logging binding) resolves afresh; the same one needs no network.
classpath() {
  local key dir
  key="$(sha256sum "${here}/pom.xml" | cut -c1-16)"
  dir="${cache_root}/${key}"
  if [ ! -f "${dir}/complete" ]; then
    echo "== resolving the Apache Kafka broker's jars with Maven into ${dir} (once per machine)" >&2
    rm -rf "${dir}"
    mkdir -p "${dir}"
    if ! mvn -q -B -f "${here}/pom.xml" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="${dir}/lib" >"${dir}/maven.log" 2>&1; then
      cat "${dir}/maven.log" >&2
      die "Maven could not resolve the broker's jars (its output above)"
    fi
    touch "${dir}/complete"
  fi
  echo "${dir}/lib"
}

# N free loopback ports, printed on one line. They are held open together while chosen, so
# they differ; another process may take one before the broker binds it (then the start fails
# and says so).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

node_pid() { cat "$1/node-$2/pid" 2>/dev/null || true; }

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Starts node ID of cluster DIR on its existing properties and data, then waits for its
# "Kafka Server started" line (a restart appends to the same log, so the lines are counted).
launch() {
  local dir="$1" id="$2" lib heap before pid deadline
  lib="$(cat "${dir}/classpath")"
  heap="$(cat "${dir}/heap")"
  local node="${dir}/node-${id}"
  before="$(grep -c 'Kafka Server started' "${node}/server.log" 2>/dev/null || true)"
  before="${before:-0}"
  java "-Xms${heap}" "-Xmx${heap}" -XX:+UseG1GC -XX:-UsePerfData "${log4j}" \
    -cp "${lib}/*" kafka.Kafka "${node}/server.properties" >>"${node}/server.log" 2>&1 </dev/null &
  pid=$!
  echo "${pid}" >"${node}/pid"
  deadline=$((SECONDS + timeout))
  while [ "$(grep -c 'Kafka Server started' "${node}/server.log" || true)" -le "${before}" ]; do
    if ! alive "${pid}"; then
      echo "broker.sh: node ${id} exited while starting; the end of its log (${node}/server.log):" >&2
      tail -n 40 "${node}/server.log" >&2
      return 1
    fi
    if [ "${SECONDS}" -ge "${deadline}" ]; then
      echo "broker.sh: node ${id} did not start within ${timeout} s; the end of its log (${node}/server.log):" >&2
      tail -n 40 "${node}/server.log" >&2
      return 1
    fi
    sleep 0.2
  done
}

ready() {
  local dir="$1" lib nodes
  lib="$(cat "${dir}/classpath")"
  nodes="$(cat "${dir}/nodes")"
  # shellcheck disable=SC1091
  . "${dir}/env"
  if ! java -XX:-UsePerfData "${log4j}" -cp "${lib}/*" "${here}/Ready.java" \
    "${ACS_TEST_BROKERS}" "${nodes}" "${timeout}" >"${dir}/version" 2>"${dir}/ready.log"; then
    echo "broker.sh: the cluster in ${dir} is not ready:" >&2
    cat "${dir}/ready.log" >&2
    for node in "${dir}"/node-*; do
      echo "-- the end of ${node}/server.log:" >&2
      tail -n 20 "${node}/server.log" >&2
    done
    return 1
  fi
}

stop_node() {
  local dir="$1" id="$2" pid waited=0
  pid="$(node_pid "$dir" "$id")"
  alive "${pid}" || return 0
  kill -CONT "${pid}" 2>/dev/null || true
  kill -TERM "${pid}" 2>/dev/null || true
  while alive "${pid}"; do
    if [ "${waited}" -ge 150 ]; then
      kill -KILL "${pid}" 2>/dev/null || true
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
}

stop() {
  local dir="$1" node
  [ -d "${dir}" ] || return 0
  for node in "${dir}"/node-*; do
    [ -d "${node}" ] || continue
    local pid
    pid="$(cat "${node}/pid" 2>/dev/null || true)"
    # Every node is asked at once, then waited for (a controller quorum shuts down together).
    if alive "${pid}"; then
      kill -CONT "${pid}" 2>/dev/null || true
      kill -TERM "${pid}" 2>/dev/null || true
    fi
  done
  for node in "${dir}"/node-*; do
    [ -d "${node}" ] || continue
    stop_node "${dir}" "${node##*-}"
  done
  local watcher
  watcher="$(cat "${dir}/watcher" 2>/dev/null || true)"
  if alive "${watcher}" && [ "${watcher}" != "${BASHPID:-$$}" ]; then
    kill "${watcher}" 2>/dev/null || true
  fi
}

start() {
  local dir="$1" nodes="${2:-1}" lib cluster_id heap replicas min_isr voters bootstrap
  case "${nodes}" in 1 | 3) ;; *) die "NODES must be 1 or 3, not ${nodes}" ;; esac
  command -v java >/dev/null || die "java is not installed (OpenJDK 17 runs the broker)"
  command -v mvn >/dev/null || die "mvn is not installed (Maven resolves the broker's jars)"
  lib="$(classpath)"
  if [ -e "${dir}" ] && [ -n "$(ls -A "${dir}")" ]; then
    die "${dir} is not empty: a cluster starts on a fresh directory"
  fi
  mkdir -p "${dir}"
  echo "${lib}" >"${dir}/classpath"
  echo "${nodes}" >"${dir}/nodes"
  if [ "${nodes}" = 1 ]; then
    heap=1g replicas=1 min_isr=1
  else
    heap=512m replicas=3 min_isr=2
  fi
  echo "${heap}" >"${dir}/heap"
  read -r -a ports <<<"$(free_ports $((2 * nodes)))"
  voters="" bootstrap=""
  for id in $(seq 1 "${nodes}"); do
    voters+="${voters:+,}${id}@127.0.0.1:${ports[$((2 * id - 1))]}"
    bootstrap+="${bootstrap:+,}127.0.0.1:${ports[$((2 * id - 2))]}"
  done
  cluster_id="$(java "${log4j}" -cp "${lib}/*" kafka.tools.StorageTool random-uuid)"
  for id in $(seq 1 "${nodes}"); do
    local node="${dir}/node-${id}" port="${ports[$((2 * id - 2))]}" cport="${ports[$((2 * id - 1))]}"
    mkdir -p "${node}/data"
    cat >"${node}/server.properties" <<EOF
process.roles=broker,controller
node.id=${id}
controller.quorum.voters=${voters}
listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${cport}
advertised.listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${cport}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=${node}/data
num.partitions=1
default.replication.factor=${replicas}
min.insync.replicas=${min_isr}
offsets.topic.replication.factor=${replicas}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=${replicas}
transaction.state.log.min.isr=${min_isr}
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=${replicas}
share.coordinator.state.topic.min.isr=${min_isr}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=4
EOF
    # Static voters: formatted without --standalone (which refuses a voters line).
    java "${log4j}" -cp "${lib}/*" kafka.tools.StorageTool format -t "${cluster_id}" \
      -c "${node}/server.properties" >"${node}/format.log" 2>&1 ||
      { cat "${node}/format.log" >&2; die "node ${id}: the storage could not be formatted"; }
  done
  {
    echo "ACS_TEST_BROKERS=${bootstrap}"
    echo "ACS_TEST_CLUSTER_DIR=${dir}"
  } >"${dir}/env"
  if [ -n "${ACS_BROKER_OWNER_PID:-}" ]; then
    # Polls its owner: no signal reaches a script when a process it does not parent dies.
    (
      trap '' INT
      while kill -0 "${ACS_BROKER_OWNER_PID}" 2>/dev/null && [ -d "${dir}" ]; do sleep 1; done
      stop "${dir}"
      # Its owner is gone: nobody else will remove the data.
      kill -0 "${ACS_BROKER_OWNER_PID}" 2>/dev/null || rm -rf "${dir}"
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"${dir}/watcher"
  fi
  for id in $(seq 1 "${nodes}"); do
    launch "${dir}" "${id}" &
  done
  local failed=0
  for _ in $(seq 1 "${nodes}"); do wait -n || failed=1; done
  if [ "${failed}" = 1 ]; then
    stop "${dir}"
    die "the cluster did not start"
  fi
  ready "${dir}" || { stop "${dir}"; die "the cluster started but is not ready"; }
  local plural=""
  [ "${nodes}" = 1 ] || plural="s"
  echo "ACS_TEST_BROKER_NAME=\"$(cat "${dir}/version") (${nodes} node${plural})\"" >>"${dir}/env"
  cat "${dir}/env"
}

node() {
  local dir="$1" id="$2" action="$3" pid
  [ -d "${dir}/node-${id}" ] || die "no node ${id} in ${dir}"
  pid="$(node_pid "$dir" "$id")"
  case "${action}" in
    stop) stop_node "${dir}" "${id}" ;;
    kill)
      alive "${pid}" || die "node ${id} is not running"
      kill -KILL "${pid}"
      while alive "${pid}"; do sleep 0.1; done
      ;;
    pause) alive "${pid}" || die "node ${id} is not running"; kill -STOP "${pid}" ;;
    resume) alive "${pid}" || die "node ${id} is not running"; kill -CONT "${pid}" ;;
    start)
      ! alive "${pid}" || die "node ${id} is running (pid ${pid})"
      launch "${dir}" "${id}"
      ;;
    # Running again, whatever was done to it: resumed if paused, started if gone.
    heal)
      if alive "${pid}"; then kill -CONT "${pid}"; else launch "${dir}" "${id}"; fi
      ;;
    *) die "unknown action ${action}: stop, kill, pause, resume, start or heal" ;;
  esac
}

case "${1:-}" in
  classpath) classpath ;;
  start) [ $# -ge 2 ] || die "usage: broker.sh start DIR [NODES]"; start "$(realpath -m "$2")" "${3:-1}" ;;
  stop) [ $# -eq 2 ] || die "usage: broker.sh stop DIR"; stop "$(realpath -m "$2")" ;;
  node) [ $# -eq 4 ] || die "usage: broker.sh node DIR ID stop|kill|pause|resume|start|heal"; node "$(realpath -m "$2")" "$3" "$4" ;;
  ready) [ $# -eq 2 ] || die "usage: broker.sh ready DIR"; ready "$(realpath -m "$2")" ;;
  *) die "usage: broker.sh classpath | start DIR [NODES] | stop DIR | node DIR ID ACTION | ready DIR" ;;
esac
