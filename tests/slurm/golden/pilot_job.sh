#!/bin/bash
#SBATCH --job-name=orch-0-pilot
#SBATCH --nodes=8
#SBATCH --time=0-02:00:00
#SBATCH --output='/srv/my state/pilot-%j.out'
#SBATCH --comment=orch-0
#SBATCH --mem=0
#SBATCH --partition=debug
#SBATCH --exclusive
#SBATCH --no-requeue
exec sleep infinity
