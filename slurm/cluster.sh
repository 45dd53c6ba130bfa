#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the tests of the slurm executor and for
# trying a spec's job arrays on a laptop: Debian's slurmctld, slurmd and munge.
#
#   slurm/cluster.sh start    install the packages if missing, configure, start (idempotent)
#   slurm/cluster.sh stop     stop the Slurm daemons
#   slurm/cluster.sh status   exit 0 when the node accepts jobs
#
# Needs root (or sudo). Partition `debug` holds the node; slurm/local.yaml targets it.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    echo "installing slurmctld, slurmd, slurm-client and munge from Debian's packages"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

configure() {
    # The node line comes from slurmd's own view of the hardware, so the node is never
    # drained for claiming more CPUs or memory than it has; 1 GiB is left to the system.
    local hw mem
    hw=$(slurmd -C | head -1)
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    hw=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem > 2048 ? mem - 1024 : mem))/" <<<"$hw")
    $SUDO mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    $SUDO tee "$CONF" >/dev/null <<CONF
# written by slurm/cluster.sh: a one-node test cluster
ClusterName=ablate
SlurmctldHost=$NODE
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
$hw State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
}

ready() {
    scontrol ping 2>/dev/null | grep -q "is UP" \
        && [ "$(sinfo -h -n "$NODE" -o %t 2>/dev/null | head -1)" != "" ] \
        && sinfo -h -n "$NODE" -o %t | grep -Eq "^(idle|mix|alloc)"
}

start() {
    install
    if ready; then
        echo "slurm: already up ($(sinfo -h -o '%P %D %t' | tr '\n' ' '))"
        return
    fi
    configure
    if ! pgrep -x munged >/dev/null; then
        $SUDO mkdir -p /run/munge && $SUDO chown munge:munge /run/munge
        $SUDO runuser -u munge -- /usr/sbin/munged
    fi
    pgrep -x slurmctld >/dev/null || $SUDO slurmctld
    pgrep -x slurmd >/dev/null || $SUDO slurmd
    for _ in $(seq 60); do
        if ready; then
            echo "slurm: up ($(sinfo -h -o '%P %D %t' | tr '\n' ' '))"
            return
        fi
        # a node left DOWN by an earlier run of the daemons is brought back
        $SUDO scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        sleep 1
    done
    echo "slurm: did not come up; logs in /var/log/slurm" >&2
    tail -5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    exit 1
}

stop() {
    if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
        $SUDO scontrol shutdown >/dev/null 2>&1 || $SUDO pkill -x slurmctld -x slurmd || true
    fi
    echo "slurm: stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) ready ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
