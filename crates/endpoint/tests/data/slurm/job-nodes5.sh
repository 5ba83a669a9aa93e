#!/bin/bash
#SBATCH --nodes=5
echo "never runs"
