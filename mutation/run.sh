#!/usr/bin/env bash
# `make mutate`: mutation testing (mutmut 3.x) of the decision code, outside CI.
#
# mutmut rewrites the modules it mutates, so it runs in a staged copy ($MUTATE_WORK), never
# in the checkout. The copy puts searchers/, predictors/, integrations/ and benchmarks/ inside
# autolr/ (the layout the wheel has), so the tests import the mutated files and not the
# editable install. mutmut lives in its own venv ($MUTATE_VENV) that sees the project venv's
# packages; the project venv is left untouched.
#
#   make mutate                                        # every module of [tool.mutmut]
#   make mutate MUTATE="autolr/_snapshot.py autolr/predictors/*"   # a subset (staged paths)
#   make mutate MUTATE_TESTS="tests/test_snapshot.py"              # fewer tests
#   MUTANTS="autolr._snapshot.x__available*" bash mutation/run.sh  # named mutants (globs)
# Then: `cd $MUTATE_WORK && $MUTATE_VENV/bin/mutmut results` (survivors: `mutmut show NAME`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV_PY=${VENV_PY:-$ROOT/.venv/bin/python}
MUTATE_VENV=${MUTATE_VENV:-${TMPDIR:-/tmp}/autolr-mutmut-venv}
MUTATE_WORK=${MUTATE_WORK:-${TMPDIR:-/tmp}/autolr-mutate}
MUTATE_JOBS=${MUTATE_JOBS:-1}

if [ ! -x "$MUTATE_VENV/bin/mutmut" ]; then
  "$VENV_PY" -m venv "$MUTATE_VENV"
  "$MUTATE_VENV/bin/pip" install --quiet "mutmut>=3.2,<4"
fi
# The project's packages (torch, botorch, optuna...) without the editable autolr finder:
# a plain path entry, not a site dir, so the project venv's .pth hooks are not run.
site=$("$VENV_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mine=$("$MUTATE_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$site" > "$mine/autolr_project_venv.pth"

rm -rf "$MUTATE_WORK"
mkdir -p "$MUTATE_WORK"
cp -r "$ROOT/autolr" "$ROOT/tests" "$ROOT/pyproject.toml" "$MUTATE_WORK/"
for d in searchers predictors integrations bench; do rm -rf "$MUTATE_WORK/autolr/$d"; done
for d in searchers predictors integrations; do cp -r "$ROOT/$d" "$MUTATE_WORK/autolr/$d"; done
cp -r "$ROOT/benchmarks" "$MUTATE_WORK/autolr/bench"
find "$MUTATE_WORK" -name __pycache__ -prune -exec rm -rf {} +

cd "$MUTATE_WORK"
"$MUTATE_VENV/bin/python" - "${MUTATE:-}" "${MUTATE_TESTS:-}" <<'PY'
# Narrow [tool.mutmut] of the staged pyproject.toml to MUTATE / MUTATE_TESTS when given.
import re, sys
only, tests = sys.argv[1].split(), sys.argv[2].split()
text = open("pyproject.toml").read()
def setkey(text, key, values):
    body = "[" + ", ".join(f'"{v}"' for v in values) + "]"
    return re.sub(rf"(?ms)^{key} = \[.*?\]", f"{key} = {body}", text, count=1)
if only:
    text = setkey(text, "only_mutate", only)
if tests:
    text = setkey(text, "pytest_add_cli_args_test_selection", tests)
open("pyproject.toml", "w").write(text)
PY
"$MUTATE_VENV/bin/python" -c "import autolr.predictors as p, sys; sys.exit(0 if p.__file__.startswith(\"$MUTATE_WORK\") else \"autolr is not imported from the staged copy: \" + p.__file__)"
# shellcheck disable=SC2086  # MUTANTS is a whitespace-separated list of names/globs
"$MUTATE_VENV/bin/mutmut" run --max-children "$MUTATE_JOBS" ${MUTANTS:-}
"$MUTATE_VENV/bin/mutmut" results
