#!/usr/bin/env bash
# Quick start, command 1: set everything up and run the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run demo --silent
