#!/bin/sh
# One job of the demo build: about two seconds of work.
echo "  $1 runs"
sleep 2
