#!/bin/bash
#SBATCH --job-name=all4
#SBATCH --nodes=2
#SBATCH --nodelist='n[1-2]'
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --gpus-per-node=4
set -eu
srun --kill-on-bad-exit=1 --gpus-per-node=4 true
