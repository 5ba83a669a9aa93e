# Sourced after scripts/lib/env.sh (needs `say` and `apt_install`): makes a real
# single-node Slurm (munged, slurmctld, slurmd, partition "debug") run on this machine,
# installing, configuring and starting whatever is missing. Idempotent: returns at once
# when the node is already up. See shared/recipes/slurm-single-node.md.
# shellcheck shell=bash

FERRY_SLURM_CONF=${FERRY_SLURM_CONF:-/etc/slurm/slurm.conf}
FERRY_SLURM_MARK='# written by ferry scripts/lib/slurm.sh'
FERRY_SLURM_LOGS=/var/log/slurm

# True when sinfo shows a usable node and munge round-trips.
slurm_up() {
  command -v sinfo >/dev/null && command -v munge >/dev/null || return 1
  # munge takes ~2 s and sinfo ~9 s to give up when their daemon is down: look for them first.
  _slurm_daemon_pid munged /run/munge/munged.pid >/dev/null || return 1
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || return 1
  _slurm_daemon_pid slurmctld /run/slurmctld.pid >/dev/null || return 1
  _slurm_daemon_pid slurmd /run/slurmd.pid >/dev/null || return 1
  timeout 10 sinfo -h -o %t 2>/dev/null | grep -qxE 'idle|mix|mixed|alloc|allocated|comp|completing'
}

# Pid of a running daemon named $1 (from its pid file $2, else by exact process name), or
# fail. Zombies do not count: a killed daemon stays one for a second or two here.
_slurm_daemon_pid() {
  local pid state
  for pid in $(cat "${2:-/dev/null}" 2>/dev/null) $(pgrep -x "$1"); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || continue
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)
    case $state in "" | Z) continue ;; esac
    echo "$pid"
    return 0
  done
  return 1
}

# The slurm.conf this machine should have, on stdout.
_slurm_conf_text() {
  local node cpus mem
  node=$(hostname -s)
  # At least 8 CPUs, whatever the machine has (config_overrides below): the tests run
  # several one-CPU blocks at once, which on a 2-core machine would queue behind each other.
  cpus=$(nproc)
  [ "$cpus" -ge 8 ] || cpus=8
  mem=$(free -m | awk '/^Mem:/ { print $2 }')
  mem=$((mem * 95 / 100)) # slurmd drains a node whose RealMemory is above what it finds
  cat <<EOF
$FERRY_SLURM_MARK: a single-node Slurm for Ferry's tests.
# That script rewrites this file (when it differs from what it would write) each time it
# has to start Slurm, and moves a slurm.conf without the line above to slurm.conf.ferry-bak.
ClusterName=ferry
SlurmctldHost=$node(127.0.0.1)
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MailProg=/bin/true
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# A job past its walltime gets SIGTERM, then SIGKILL KillWait seconds later.
KillWait=5
OverTimeLimit=0
# Finished jobs stay visible to scontrol show job for this many seconds.
MinJobAge=600
SlurmctldTimeout=120
SlurmdTimeout=300
InactiveLimit=0
MessageTimeout=10
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=$FERRY_SLURM_LOGS/slurmctld.log
SlurmdLogFile=$FERRY_SLURM_LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

# Writes slurm.conf when it is missing, not ours (the old one is kept as .ferry-bak) or
# ours but stale. Returns 0 when it wrote a new one (running daemons must restart).
_slurm_write_conf() {
  local want
  want=$(_slurm_conf_text)
  if [ -f "$FERRY_SLURM_CONF" ]; then
    if head -n 1 "$FERRY_SLURM_CONF" | grep -qF "$FERRY_SLURM_MARK"; then
      [ "$(cat "$FERRY_SLURM_CONF")" = "$want" ] && return 1
    else
      say "keeping the existing $FERRY_SLURM_CONF as $FERRY_SLURM_CONF.ferry-bak"
      cp -p "$FERRY_SLURM_CONF" "$FERRY_SLURM_CONF.ferry-bak"
    fi
  fi
  say "writing $FERRY_SLURM_CONF"
  mkdir -p "$(dirname "$FERRY_SLURM_CONF")"
  printf '%s\n' "$want" >"$FERRY_SLURM_CONF"
  return 0
}

_slurm_ensure_munge() {
  if _slurm_daemon_pid munged /run/munge/munged.pid >/dev/null &&
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0
  fi
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating the munge key"
    if [ -x /usr/sbin/mungekey ]; then
      /usr/sbin/mungekey -c -f -k /etc/munge/munge.key >&2 || return 1
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none || return 1
    fi
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  chmod 0400 /etc/munge/munge.key
  local pid
  if pid=$(_slurm_daemon_pid munged /run/munge/munged.pid); then
    say "munged (pid $pid) does not answer: restarting it"
    kill "$pid" 2>/dev/null
    sleep 1
  fi
  say "starting munged"
  # --force: start even when a killed munged left its socket or pid file behind.
  su -s /bin/sh munge -c '/usr/sbin/munged --force' </dev/null >/dev/null 2>>/var/log/munge/munged.start.log || {
    echo "error: munged did not start: see /var/log/munge/munged.log and /var/log/munge/munged.start.log" >&2
    return 1
  }
  local i
  for ((i = 0; i < 50; i++)); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: munged runs but 'munge -n | unmunge' fails: see /var/log/munge/munged.log" >&2
  return 1
}

# Starts daemon $1 (pid file $2) unless it already runs; $3 = restart it anyway.
_slurm_start_daemon() {
  local name=$1 pidfile=$2 restart=${3:-} pid i
  if pid=$(_slurm_daemon_pid "$name" "$pidfile"); then
    [ -z "$restart" ] && return 0
    say "restarting $name (pid $pid) for the new configuration"
    kill "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
      _slurm_daemon_pid "$name" >/dev/null || break
      sleep 0.1
    done
    if pid=$(_slurm_daemon_pid "$name"); then
      kill -9 "$pid" 2>/dev/null
      sleep 0.5
    fi
  fi
  rm -f "$pidfile" # stale: the daemon is not running
  say "starting $name"
  if ! "/usr/sbin/$name" </dev/null >/dev/null 2>"$FERRY_SLURM_LOGS/$name.start.log"; then
    echo "error: $name did not start:" >&2
    sed 's/^/    /' "$FERRY_SLURM_LOGS/$name.start.log" >&2
    tail -n 20 "$FERRY_SLURM_LOGS/$name.log" 2>/dev/null | sed 's/^/    /' >&2
    echo "  see $FERRY_SLURM_LOGS/$name.log" >&2
    return 1
  fi
  for ((i = 0; i < 50; i++)); do
    _slurm_daemon_pid "$name" "$pidfile" >/dev/null && return 0
    sleep 0.1
  done
  echo "error: $name exited right after starting:" >&2
  tail -n 20 "$FERRY_SLURM_LOGS/$name.log" 2>/dev/null | sed 's/^/    /' >&2
  echo "  see $FERRY_SLURM_LOGS/$name.log and $FERRY_SLURM_LOGS/$name.start.log" >&2
  return 1
}

ensure_slurm() {
  # Up, and configured as this script would configure it: nothing to do.
  if slurm_up && [ "$(cat "$FERRY_SLURM_CONF" 2>/dev/null)" = "$(_slurm_conf_text)" ]; then
    return 0
  fi
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    apt_install slurm-wlm munge || return 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "error: Slurm is not running and starting it needs root" >&2
    return 1
  fi
  local restart=
  _slurm_write_conf && restart=1
  mkdir -p /var/spool/slurmd /var/spool/slurmctld "$FERRY_SLURM_LOGS"
  _slurm_ensure_munge || return 1
  _slurm_start_daemon slurmctld /run/slurmctld.pid "$restart" || return 1
  _slurm_start_daemon slurmd /run/slurmd.pid "$restart" || return 1

  local node state i=0 deadline=$((SECONDS + 60))
  node=$(hostname -s)
  while ((SECONDS < deadline)); do
    state=$(timeout 10 sinfo -h -n "$node" -o %t 2>/dev/null | head -n 1)
    case $state in
      idle | mix | mixed | alloc | allocated | comp | completing)
        say "Slurm is up: node $node is $state"
        return 0
        ;;
      down* | drain* | drng* | fail*)
        # Left down by an earlier run (e.g. slurmd was killed): the daemons run now.
        if ((i++ % 5 == 0)); then
          say "node $node is $state: resuming it"
          scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
        fi
        ;;
    esac
    sleep 1
  done
  echo "error: Slurm node $node is not idle after 60 s (sinfo says '${state:-nothing}')" >&2
  timeout 10 sinfo -N -l >&2 2>/dev/null || true
  timeout 10 scontrol show node "$node" 2>/dev/null | grep -E 'State=|Reason=' >&2 || true
  echo "  see $FERRY_SLURM_LOGS/slurmctld.log and $FERRY_SLURM_LOGS/slurmd.log" >&2
  return 1
}
