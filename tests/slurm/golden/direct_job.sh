#!/bin/bash
#SBATCH --job-name='kfac; rm -rf /'
#SBATCH --nodes=3
#SBATCH --nodelist='n[1-3]'
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=0-00:11:00
#SBATCH --output=/srv/jobs/1/stdout
#SBATCH --error=/srv/jobs/1/stderr
#SBATCH --comment=orch-0:1:1
#SBATCH --open-mode=append
#SBATCH --exclusive
#SBATCH --no-requeue
set -eu
export ORCH_NODES=n1,n2,n3
export TAG='a b'
srun --kill-on-bad-exit=0 --label --cpus-per-task=1 python -I -S /opt/_slurm_task.py /srv/jobs/1/attempt-1 -- echo 'it'"'"'s $HOME'
