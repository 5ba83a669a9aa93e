#!/bin/bash
echo "job $SLURM_JOB_ID started at $(date +%s)"
trap 'echo "job $SLURM_JOB_ID got SIGTERM at $(date +%s)"' TERM
sleep 600 &
wait
echo "job $SLURM_JOB_ID after wait at $(date +%s)"
sleep 600
