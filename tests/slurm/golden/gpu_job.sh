#!/bin/bash
#SBATCH --job-name=train
#SBATCH --nodes=1
#SBATCH --nodelist=n3
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --gpus-per-task=1
#SBATCH --mem=1000M
#SBATCH --output=/srv/jobs/7/stdout
#SBATCH --error=/srv/jobs/7/stderr
#SBATCH --comment=orch-0:7:1
#SBATCH --partition='gpu a'
#SBATCH --no-requeue
set -eu
srun --kill-on-bad-exit=0 --label --cpus-per-task=1 --gpus-per-task=1 --gpu-bind=per_task:1 python -I -S /opt/supervisor.py /srv/jobs/7/attempt-1 -- train
