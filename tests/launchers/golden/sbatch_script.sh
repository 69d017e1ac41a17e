#!/bin/bash
#SBATCH --job-name='kfac vs sgd; rm -rf /'
#SBATCH --nodes=4
#SBATCH --nodelist='n[1-3,7]'
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=2
#SBATCH --time=0-01:01:00
#SBATCH --output='/tmp/out dir/%j.out'
#SBATCH --partition=debug
set -eu
export OMP_NUM_THREADS=1
export TAG='a b;c'
srun --kill-on-bad-exit=1 python -m sweeps.train optimizer=kfac 'note=it'"'"'s $HOME'
