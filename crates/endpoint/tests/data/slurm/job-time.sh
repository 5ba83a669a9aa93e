#!/bin/bash
#SBATCH --time=00:01:00
echo "job $SLURM_JOB_ID with a one-minute walltime"
