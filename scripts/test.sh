#!/usr/bin/env bash
# Quick start, command 2: set everything up, then lint, build the docs and run the whole test suite.
# Under CI=true an integration suite whose host capability is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "[test] lint and typecheck"
npm run lint --silent

echo "[test] docs"
npm run docs --silent >/dev/null

echo "[test] vitest"
report="$(mktemp -t nubes-vitest-XXXXXX.json)"
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" || status=$?
# One plain closing line that any CI reader understands.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`Tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
' "$report" || true
rm -f "$report"
exit "$status"
