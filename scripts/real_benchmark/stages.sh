# Sourced by scripts/real_benchmark.sh and scripts/real_benchmark/try_setting.sh: one training
# stage is started, resumed or skipped, so a stopped script picks up where it was.

finished() {  # RUN: its run.json says finished
  [ -f "$1/run.json" ] && [ "$(python -c "import json,sys; print(json.load(open(sys.argv[1]))\
['status'])" "$1/run.json")" = finished ]
}

stage() {  # COMMAND RUN ARGS...: start (cpu preset, ARGS), resume or skip one training stage
  local command=$1 run=$2; shift 2
  if finished "$run"; then return 0; fi
  if [ -f "$run/checkpoints/last.pt" ]; then
    contraseg "$command" --out "$run" --resume
  else
    contraseg "$command" --out "$run" --preset cpu "$@"
  fi
}
