#!/bin/bash
echo "hello from job $SLURM_JOB_ID on $(hostname)"
