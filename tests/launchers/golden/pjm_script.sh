#!/bin/bash
#PJM -N "kfac-4x6x16"
#PJM -L "node=4x6x16:torus:strict"
#PJM -L "rscgrp=small"
#PJM -L "elapse=01:30:00"
#PJM --mpi "proc=384"
#PJM --mpi "max-proc-per-node=1"
#PJM -g "hp200000"
#PJM -x "OMP_NUM_THREADS=48"
#PJM -o "out.txt"
#PJM -e "err.txt"
#PJM -s
set -eu
export TAG='a,b c'
mpiexec -vcoordfile ranks.vcoord ./train --note 'it'"'"'s; $(rm -rf /)'
