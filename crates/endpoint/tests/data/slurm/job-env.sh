#!/bin/bash
#SBATCH --nodes=1
env | grep SLURM | sort
echo "--- srun --ntasks=1 --nodes=1 hostname:"
srun --ntasks=1 --nodes=1 hostname
echo "srun exit=$?"
