#!/usr/bin/env bash
# A real two-node SLURM cluster on this one machine, for the multi-node tests and for trying the sbatch
# script before a real cluster:
#
#   bash tools/local_slurm.sh start DIR     write DIR/slurm.conf and a munge key, start munged, slurmctld
#                                           and two slurmd (nodes n1 and n2, both at 127.0.0.1 on their own
#                                           ports), wait until sinfo shows both idle; prints the environment
#                                           the clients need (eval it: SLURM_CONF=DIR/slurm.conf)
#   bash tools/local_slurm.sh stop DIR      cancel the cluster's jobs, wait for them, then stop exactly the
#                                           daemons start began (their PIDs are in DIR/pids), nothing else
#   bash tools/local_slurm.sh check         exit 0 where the daemons are installed (Debian: slurm-wlm, munge)
#
# Everything (config, key, state, spool, logs) lives in DIR, which must be absolute-able and empty or
# new; the daemons run in the foreground of their own background processes, so their PIDs are known
# exactly. A failed start stops what it had started. Debian's slurm-wlm 22.05 and munge, run as root
# (CI) or as the user who owns DIR; SLURM_PORT_BASE picks the ports (default: three free ones).
set -euo pipefail

usage() { sed -n '2,16p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
action=$1

installed() {
    for program in munged slurmctld slurmd sbatch sinfo scontrol; do
        command -v "$program" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$program" >/dev/null 2>&1 \
            || { echo "local_slurm.sh: $program not found (Debian: apt-get install slurm-wlm munge)" >&2; return 1; }
    done
}
export PATH=$PATH:/usr/sbin:/sbin

if [ "$action" = check ]; then
    installed
    exit $?
fi
[ $# -eq 2 ] || usage
mkdir -p "$2"
dir=$(cd "$2" && pwd)  # the daemons change directory: every path in the config is absolute
export SLURM_CONF=$dir/slurm.conf

free_ports() {  # three consecutive free TCP ports: slurmctld, n1's slurmd, n2's slurmd
    python3 - <<'EOF'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 60000)
    try:
        held = []
        for port in range(base, base + 3):
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            held.append(s)
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in held:
            s.close()
EOF
}

write_config() {
    local base=$1 user
    user=$(id -un)
    mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
    chmod 700 "$dir/munge"
    head -c 1024 /dev/urandom > "$dir/munge/munge.key"
    chmod 400 "$dir/munge/munge.key"
    local cpus
    cpus=$(nproc)
    [ "$cpus" -ge 2 ] || cpus=2
    cat > "$SLURM_CONF" <<EOF
# written by tools/local_slurm.sh: a two-node cluster on one machine
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$base
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
# cred_expire: a requeued job may start again after it (SLURM's default, 120 s, is a long wait in a test)
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
# both nodes are this machine, each claiming all of its cores: 2 tasks per node on 2 cores
NodeName=n1 NodeAddr=127.0.0.1 NodeHostname=n1 Port=$((base + 1)) CPUs=$cpus RealMemory=1000 State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 NodeHostname=n2 Port=$((base + 2)) CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_daemon() {  # NAME COMMAND...: in the background, its PID recorded before anything else can fail
    local name=$1
    shift
    "$@" >"$dir/log/$name.out" 2>&1 &
    echo "$name $!" >> "$dir/pids"
}

stop_daemons() {  # the recorded PIDs only, newest first; TERM, then KILL after 10 s
    [ -f "$dir/pids" ] || return 0
    local name pid pids=()
    while read -r name pid; do
        pids=("$pid" "${pids[@]}")
    done < "$dir/pids"
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 100); do
        local alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -f "$dir/pids"
}

cancel_jobs() {  # jobs leave processes (slurmstepd and their tasks) that slurmd, not this script, began
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    [ -n "$jobs" ] || return 0
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 300); do  # until none is pending, running or completing (KillWait is 30 s)
        [ -z "$(squeue -h -o %i 2>/dev/null || true)" ] && return 0
        sleep 0.2
    done
    echo "local_slurm.sh: jobs still listed 60 s after scancel: $(squeue -h -o '%i %T' | tr '\n' ' ')" >&2
}

case "$action" in
start)
    installed || exit 3
    [ ! -e "$dir/pids" ] || { echo "local_slurm.sh: $dir/pids exists: a cluster runs there (stop it first)" >&2; exit 2; }
    trap 'echo "local_slurm.sh: start failed; logs in $dir/log" >&2; stop_daemons' ERR
    base=${SLURM_PORT_BASE:-$(free_ports)}
    write_config "$base"
    start_daemon munged munged --foreground --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
    for _ in $(seq 100); do [ -S "$dir/munge/munge.socket" ] && break; sleep 0.1; done
    [ -S "$dir/munge/munge.socket" ] || { echo "local_slurm.sh: munged did not start" >&2; false; }
    start_daemon slurmctld slurmctld -D -i -f "$SLURM_CONF"
    start_daemon slurmd-n1 slurmd -D -N n1 -f "$SLURM_CONF"
    start_daemon slurmd-n2 slurmd -D -N n2 -f "$SLURM_CONF"
    for _ in $(seq 300); do
        states=$(sinfo -h -N -o "%N %t" 2>/dev/null | sort -u | tr '\n' ' ')
        [ "$states" = "n1 idle n2 idle " ] && break
        sleep 0.2
    done
    if [ "$states" != "n1 idle n2 idle " ]; then
        echo "local_slurm.sh: the nodes did not become idle within 60 s (sinfo: ${states:-no answer})" >&2
        false
    fi
    trap - ERR
    echo "export SLURM_CONF=$SLURM_CONF"
    ;;
stop)
    cancel_jobs
    stop_daemons
    ;;
*)
    usage
    ;;
esac
