#!/bin/bash
echo "failing with exit 3"
echo "to stderr" >&2
exit 3
