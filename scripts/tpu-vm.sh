#!/usr/bin/env bash
# Trains on a preemptible (Spot) Cloud TPU VM and keeps it training across preemptions.
#
#   scripts/tpu-vm.sh [--dry-run] COMMAND --zone ZONE [options] [-- extra dalle train args]
#
# Commands:
#   create    create the TPU VM (Spot by default)
#   run       copy the source and config to the VM, build dalle, install the TPU
#             plugin and start `dalle train --config CONFIG --run RUN --compile-cache-in-run`
#             in the background (compiled programs follow the run to the next VM)
#   babysit   loop: check the VM; when it was preempted (or is gone) recreate it and
#             run again; when training exited with 75 (stopped early, checkpoint
#             saved) start it again; stop when training exits 0 or with another error
#   status    print the VM state and, if it is up, the training exit code or "running"
#   delete    delete the TPU VM
#
# Options (environment variable in brackets):
#   --zone ZONE            [TPU_ZONE]      required
#   --project PROJECT      [TPU_PROJECT]   default: gcloud's configured project
#   --name NAME            [TPU_NAME]      default: dalle-tpu
#   --accelerator TYPE     [TPU_TYPE]      default: v3-8
#   --version IMAGE        [TPU_VERSION]   default: tpu-ubuntu2204-base
#   --spot | --preemptible | --on-demand   default: --spot
#   --config FILE                          training config (run, babysit)
#   --run gs://BUCKET/PATH                 run directory (run, babysit); must be on GCS,
#                                          the VM's disk does not survive preemption
#   --interval SECONDS                     babysit polling interval, default 60
#   --dry-run                              print the commands instead of running them;
#                                          babysit then shows one recovery round as if
#                                          the VM had been preempted
set -euo pipefail

EXIT_PREEMPTED=75
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "tpu-vm.sh: $*" >&2; exit 2; }
usage() { sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

dry_run=0
command=""
zone="${TPU_ZONE:-}"
project="${TPU_PROJECT:-}"
name="${TPU_NAME:-dalle-tpu}"
accelerator="${TPU_TYPE:-v3-8}"
version="${TPU_VERSION:-tpu-ubuntu2204-base}"
capacity="--spot"
config=""
run_url=""
interval=60
train_args=()

need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "option $1 needs a value"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --zone) need_value "$@"; zone="$2"; shift 2 ;;
    --project) need_value "$@"; project="$2"; shift 2 ;;
    --name) need_value "$@"; name="$2"; shift 2 ;;
    --accelerator) need_value "$@"; accelerator="$2"; shift 2 ;;
    --version) need_value "$@"; version="$2"; shift 2 ;;
    --spot|--preemptible) capacity="$1"; shift ;;
    --on-demand) capacity=""; shift ;;
    --config) need_value "$@"; config="$2"; shift 2 ;;
    --run) need_value "$@"; run_url="$2"; shift 2 ;;
    --interval) need_value "$@"; interval="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; train_args=("$@"); break ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
      [[ -z "$command" ]] || die "unexpected argument '$1' (the command is already '$command')"
      command="$1"; shift ;;
  esac
done

case "$command" in
  create|run|babysit|status|delete) ;;
  "") die "no command given (expected create, run, babysit, status or delete; see --help)" ;;
  *) die "unknown command '$command' (expected create, run, babysit, status or delete)" ;;
esac
[[ -n "$zone" ]] || die "--zone is required (or set TPU_ZONE), e.g. --zone europe-west4-a"
[[ "$name" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name '$name' is not a valid TPU name (lowercase letters, digits and dashes, starting with a letter)"
[[ "$interval" =~ ^[1-9][0-9]*$ ]] || die "--interval must be a positive whole number of seconds, got '$interval'"
if [[ "$command" == run || "$command" == babysit ]]; then
  [[ -n "$config" ]] || die "$command needs --config FILE"
  [[ -f "$config" ]] || die "--config '$config' is not a file"
  [[ -n "$run_url" ]] || die "$command needs --run gs://BUCKET/PATH"
  [[ "$run_url" =~ ^gs://[^/]+/.+ ]] || die "--run must be a gs://BUCKET/PATH URL (a preempted VM loses its disk), got '$run_url'"
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$zone")
[[ -z "$project" ]] || where+=(--project "$project")

# Prints a command line that a shell would read back as the same words.
print_cmd() {
  local out="" word
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+="$word "
    else
      out+="'$(printf '%s' "$word" | sed "s/'/'\\\\''/g")' "
    fi
  done
  echo "${out% }"
}

# Runs a command, or prints it under --dry-run.
run_cmd() {
  if [[ $dry_run -eq 1 ]]; then
    print_cmd "$@"
  else
    "$@"
  fi
}

# Like run_cmd, but prints the command's output; under --dry-run prints the
# command and answers with $1 (what the real command would print).
query_cmd() {
  local pretend="$1"; shift
  if [[ $dry_run -eq 1 ]]; then
    print_cmd "$@"
    echo "$pretend"
  else
    "$@"
  fi
}

remote() { run_cmd "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --command "$1"; }

do_create() {
  local args=("${gcloud_tpu[@]}" create "$name" "${where[@]}" --accelerator-type "$accelerator" --version "$version")
  [[ -z "$capacity" ]] || args+=("$capacity")
  run_cmd "${args[@]}"
}

do_delete() { run_cmd "${gcloud_tpu[@]}" delete "$name" "${where[@]}" --quiet; }

do_run() {
  local git_hash tarball launcher
  git_hash="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  tarball="${TMPDIR:-/tmp}/dalle-xla-src.tar.gz"
  launcher="${TMPDIR:-/tmp}/dalle-train-$name.sh"
  # The training command goes to the VM as a file, so its arguments need no
  # second layer of quoting inside the ssh command. Its exit status lands in
  # ~/dalle-exit-code for the babysitter.
  {
    echo '#!/usr/bin/env bash'
    echo 'cd ~/dalle-xla'
    printf 'DALLE_PLATFORM=tpu target/release/dalle train --config ~/%q --run %q --compile-cache-in-run' "$(basename "$config")" "$run_url"
    if [[ ${#train_args[@]} -gt 0 ]]; then printf ' %q' "${train_args[@]}"; fi
    echo
    echo 'echo $? > ~/dalle-exit-code'
  } > "$launcher"
  if [[ $dry_run -eq 1 ]]; then echo "# $launcher:"; sed 's/^/#   /' "$launcher"; fi
  run_cmd git -C "$root" archive --format=tar.gz -o "$tarball" HEAD
  run_cmd "${gcloud_tpu[@]}" scp "$tarball" "$config" "$launcher" "$name:" "${where[@]}"
  # On the VM: unpack, build (installing Rust when needed), install libtpu, start training detached.
  remote "set -e; mkdir -p ~/dalle-xla; tar -xzf ~/$(basename "$tarball") -C ~/dalle-xla; cd ~/dalle-xla; \
command -v cargo >/dev/null || { curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal; }; . ~/.cargo/env; \
DALLE_GIT_HASH=$git_hash cargo build --release --bin dalle; scripts/install-plugin tpu; rm -f ~/dalle-exit-code; \
nohup bash ~/$(basename "$launcher") > ~/dalle-train.log 2>&1 < /dev/null &"
}

vm_state() { query_cmd "$1" "${gcloud_tpu[@]}" describe "$name" "${where[@]}" --format='value(state)' 2>/dev/null || echo MISSING; }
train_status() { query_cmd "$1" "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --command 'cat ~/dalle-exit-code 2>/dev/null || echo running'; }

do_status() {
  local state
  if [[ $dry_run -eq 1 ]]; then vm_state READY; train_status running; return 0; fi
  state="$(vm_state READY)"
  echo "VM $name: ${state:-MISSING}"
  if [[ "$state" == READY ]]; then echo "training: $(train_status running)"; fi
}

do_babysit() {
  local state code
  while true; do
    if [[ $dry_run -eq 1 ]]; then
      vm_state PREEMPTED; state=PREEMPTED
    else
      state="$(vm_state READY)"
    fi
    case "$state" in
      READY)
        code="$(train_status running | tail -n 1)"
        case "$code" in
          running) ;;
          0) echo "tpu-vm.sh: training finished"; return 0 ;;
          "$EXIT_PREEMPTED") echo "tpu-vm.sh: training stopped early (checkpoint saved); starting it again"; do_run ;;
          *) echo "tpu-vm.sh: training failed with exit code $code; see ~/dalle-train.log on $name" >&2; return 1 ;;
        esac ;;
      PREEMPTED|TERMINATED|STOPPED|MISSING|"")
        echo "tpu-vm.sh: VM $name is ${state:-MISSING}; recreating it and resuming from the last checkpoint" >&2
        [[ "$state" == MISSING || -z "$state" ]] || do_delete
        do_create
        do_run ;;
      *) ;; # CREATING, STARTING, REPAIRING, ...: wait
    esac
    [[ $dry_run -eq 0 ]] || return 0
    sleep "$interval"
  done
}

case "$command" in
  create) do_create ;;
  delete) do_delete ;;
  run) do_run ;;
  status) do_status ;;
  babysit) do_babysit ;;
esac
