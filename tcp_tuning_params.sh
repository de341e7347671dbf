#!/usr/bin/env bash
# Tunes a Linux host's kernel settings for a msgserver that holds many TCP connections.
#
# Writes ONE sysctl drop-in file (default /etc/sysctl.d/60-msgserver.conf, overridable with
# the MSGSERVER_SYSCTL_FILE environment variable) and loads it with `sysctl -p <file>`.
# It never edits /etc/sysctl.conf and never lowers a limit the host already has higher; the file
# it writes has the same content on every run, so running it again changes nothing. Run with
# --help for the options.
set -euo pipefail

readonly DEFAULT_SYSCTL_FILE=/etc/sysctl.d/60-msgserver.conf
SYSCTL_FILE=${MSGSERVER_SYSCTL_FILE:-$DEFAULT_SYSCTL_FILE}
readonly SYSCTL_FILE
# Where the current values are read. The tests point it at a fake tree; nothing else should.
PROC_SYS=${MSGSERVER_PROC_SYS:-/proc/sys}
readonly PROC_SYS
# Open-file limit advised for the service (every connection is one file descriptor; the
# server's MAX_CONNECTIONS default is 16000). Must not exceed fs.nr_open below.
readonly NOFILE_ADVICE=1048576
PROG=$(basename "$0")
readonly PROG

# Settings, in the order they are written: "key|value|why". The why becomes the comment
# above the key in the drop-in file.
readonly SETTINGS=(
  "net.core.somaxconn|4096|Upper bound the kernel puts on any listen() backlog; matches msgserver's TCP_BACKLOG default 4096, so a larger backlog is not silently cut down and bursts of connects are not dropped."
  "net.ipv4.tcp_max_syn_backlog|8192|Half-open (SYN_RECV) connections queued per listener; twice somaxconn so a connect storm is not dropped before the handshake completes."
  "net.ipv4.ip_local_port_range|10240 65535|Ephemeral ports for outgoing connections (load generators, clients on this host); widened to ~55k ports. Starts above msgserver's default PORT 9000 so the listen port is never handed out."
  "net.core.rmem_max|16777216|Largest receive buffer (16 MiB) a socket may ask for with SO_RCVBUF; room for fast, high-latency links."
  "net.core.wmem_max|16777216|Largest send buffer (16 MiB) a socket may ask for with SO_SNDBUF."
  "net.ipv4.tcp_rmem|4096 131072 16777216|TCP receive buffer min / default / max in bytes: small default keeps memory per idle connection low, autotuning may grow a busy one up to the max."
  "net.ipv4.tcp_wmem|4096 65536 16777216|TCP send buffer min / default / max in bytes: small default keeps memory per idle connection low, autotuning may grow a busy one up to the max."
  "net.ipv4.tcp_tw_reuse|1|Lets new outgoing connections reuse sockets in TIME_WAIT when safe (TCP timestamps), so many short-lived client connections do not exhaust the ephemeral ports."
  "fs.file-max|2097152|System-wide limit on open files; every TCP connection holds one file descriptor."
  "fs.nr_open|2097152|Highest per-process open-file limit that can be set (ulimit -n / LimitNOFILE=); must be at least the limit given to the service."
)

usage() {
  cat <<EOF
Usage: $PROG [--dry-run] [--revert] [--help]

Tunes Linux kernel settings (sysctl) for a msgserver host with many TCP connections.
Writes one drop-in file and loads it with 'sysctl -p':
  $SYSCTL_FILE
(set MSGSERVER_SYSCTL_FILE to use another path). It never edits /etc/sysctl.conf,
never lowers a limit this host already has higher (it keeps that value instead),
and running it again leaves the same file. Also prints advice on the open-file limit
(ulimit -n) for the service user.

Options:
  --dry-run   Print the file it would write and the current value of each key;
              change nothing. Works without root.
  --revert    Remove the drop-in file. The values return to the defaults at the next
              reboot; 'sysctl --system' reloads the remaining sysctl files at once.
              Combine with --dry-run to only show what would be removed.
  -h, --help  Show this help and exit.

Without --dry-run it must run as root.
Exit status: 0 success, 1 failure (e.g. not root), 2 bad usage.
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}

# Fields of one SETTINGS entry.
setting_key() { printf '%s' "${1%%|*}"; }
setting_value() {
  local rest=${1#*|}
  printf '%s' "${rest%%|*}"
}
setting_why() { printf '%s' "${1##*|}"; }

# The drop-in file's content. Deterministic (no dates) so repeated runs write the same file.
render_file() {
  local entry key planned value why
  echo "# msgserver: kernel settings for many TCP connections."
  echo "# Written by tcp_tuning_params.sh; edit that script, not this file."
  echo "# Remove with: tcp_tuning_params.sh --revert"
  for entry in "${SETTINGS[@]}"; do
    key=$(setting_key "$entry")
    planned=$(setting_value "$entry")
    value=$(effective_value "$key" "$planned" "$(current_value "$key")")
    why=$(setting_why "$entry")
    echo
    echo "# $why"
    if [[ $value != "$planned" ]]; then
      echo "# (msgserver plans $planned; this host already had more, which is kept.)"
    fi
    echo "$key = $value"
  done
}

# The value the running kernel has for a key, whitespace squeezed to single spaces.
current_value() {
  local key=$1 path value
  path=$PROC_SYS/${key//.//}
  if [[ -r $path ]] && value=$(cat "$path" 2>/dev/null); then
    :
  elif [[ $PROC_SYS == /proc/sys ]] && command -v sysctl >/dev/null 2>&1 &&
    value=$(sysctl -n "$key" 2>/dev/null); then
    :
  else
    echo "(unavailable)"
    return 0
  fi
  # Multi-value keys (tcp_rmem, ip_local_port_range) are tab-separated in /proc/sys.
  echo "$value" | tr -s '[:space:]' ' ' | sed 's/^ //; s/ $//'
}

# Keys that are upper limits: a value above the planned one is already better, and writing the
# planned one would lower it (e.g. systemd raises fs.file-max and fs.nr_open far above these at
# boot, and some hosts allow bigger TCP buffers).
readonly LIMIT_KEYS=" net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.core.rmem_max net.core.wmem_max net.ipv4.tcp_rmem net.ipv4.tcp_wmem fs.file-max fs.nr_open "

# Succeeds if decimal string $1 is a larger number than decimal string $2 (any length: fs.file-max
# may be 2^63-1, past what a pattern of 18 digits or careless arithmetic would take).
num_gt() {
  local a=$1 b=$2
  while [[ $a == 0?* ]]; do a=${a#0}; done
  while [[ $b == 0?* ]]; do b=${b#0}; done
  if ((${#a} != ${#b})); then
    ((${#a} > ${#b}))
  else
    [[ $a > $b ]]
  fi
}

# The value to write for a key: the planned one, except that for a limit each field keeps the
# current value where that is higher, so the plan never lowers a limit. Running the script again
# then plans the same values, as the current ones are what it wrote.
effective_value() {
  local key=$1 planned=$2 current=$3 i
  local -a want have out
  if [[ $LIMIT_KEYS != *" $key "* ]]; then
    printf '%s' "$planned"
    return 0
  fi
  read -ra want <<<"$planned"
  read -ra have <<<"$current"
  if ((${#want[@]} != ${#have[@]})); then
    printf '%s' "$planned"
    return 0
  fi
  for i in "${!want[@]}"; do
    if [[ ${have[i]} =~ ^[0-9]+$ ]] && num_gt "${have[i]}" "${want[i]}"; then
      out+=("${have[i]}")
    else
      out+=("${want[i]}")
    fi
  done
  printf '%s' "${out[*]}"
}

# Table of the kernel's current values next to the ones the file sets; $1 is its heading.
print_current_values() {
  local heading=$1 entry key planned value current mark kept=()
  echo "$heading (value the file sets in brackets, * = differs):"
  for entry in "${SETTINGS[@]}"; do
    key=$(setting_key "$entry")
    planned=$(setting_value "$entry")
    current=$(current_value "$key")
    value=$(effective_value "$key" "$planned" "$current")
    mark=" "
    [[ $current == "$value" ]] || mark="*"
    printf '  %s %-30s %-24s [%s]\n' "$mark" "$key" "$current" "$value"
    [[ $value == "$planned" ]] || kept+=("$key")
  done
  if ((${#kept[@]} > 0)); then
    echo "Kept where this host already has more than msgserver plans: ${kept[*]}"
  fi
}

print_ulimit_advice() {
  local soft hard
  soft=$(ulimit -Sn)
  hard=$(ulimit -Hn)
  cat <<EOF

Open-file limit (ulimit -n): every connection uses one file descriptor, so the user that
runs msgserver needs a limit well above MAX_CONNECTIONS. sysctl does not set this.
  Current shell: ulimit -n = $soft (soft), $hard (hard)
  For a systemd service, add to its unit (or a drop-in via 'systemctl edit msgserver'):
      [Service]
      LimitNOFILE=$NOFILE_ADVICE
  For a login user (pam_limits), add to /etc/security/limits.conf or a file in
  /etc/security/limits.d/ (replace 'msgserver' with the service user):
      msgserver  soft  nofile  $NOFILE_ADVICE
      msgserver  hard  nofile  $NOFILE_ADVICE
  Or for one shell before starting the server: ulimit -n $NOFILE_ADVICE
  The limit may not exceed fs.nr_open.
EOF
}

require_root() {
  if [[ $EUID -ne 0 ]]; then
    die "must run as root to $1 (run it with sudo, or add --dry-run to only show the plan)"
  fi
}

do_apply() {
  local dry_run=$1 content dir tmp existing=""
  content=$(render_file)
  if [[ $dry_run == 1 ]]; then
    echo "Dry run: nothing is changed."
    echo "Would write $SYSCTL_FILE and load it with 'sysctl -p $SYSCTL_FILE':"
    echo "----- $SYSCTL_FILE -----"
    echo "$content"
    echo "-----"
    echo
    print_current_values "Current values"
    print_ulimit_advice
    return 0
  fi

  require_root "write $SYSCTL_FILE"
  command -v sysctl >/dev/null 2>&1 || die "sysctl not found (install procps)"
  dir=$(dirname "$SYSCTL_FILE")
  mkdir -p "$dir"
  if [[ -f $SYSCTL_FILE ]]; then
    existing=$(cat "$SYSCTL_FILE")
  fi
  if [[ -f $SYSCTL_FILE && $existing == "$content" ]]; then
    echo "$SYSCTL_FILE is already up to date."
  else
    # Write to a temporary file beside the target, then rename: never a half-written file.
    tmp=$(mktemp "$dir/.60-msgserver.conf.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    echo "$content" >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$SYSCTL_FILE"
    trap - EXIT
    echo "Wrote $SYSCTL_FILE."
  fi
  echo "Loading it: sysctl -p $SYSCTL_FILE"
  if ! sysctl -p "$SYSCTL_FILE"; then
    die "sysctl could not apply every key in $SYSCTL_FILE (see above; in a container some keys are read-only). The file stays in place and is loaded at boot."
  fi
  echo
  print_current_values "Values now in effect"
  print_ulimit_advice
}

do_revert() {
  local dry_run=$1
  if [[ ! -e $SYSCTL_FILE ]]; then
    echo "$SYSCTL_FILE does not exist: nothing to revert."
    return 0
  fi
  if [[ $dry_run == 1 ]]; then
    echo "Dry run: nothing is changed."
    echo "Would remove $SYSCTL_FILE."
  else
    require_root "remove $SYSCTL_FILE"
    rm -f "$SYSCTL_FILE"
    echo "Removed $SYSCTL_FILE."
  fi
  echo "The running kernel keeps the tuned values for now. They return to the defaults at the"
  echo "next reboot, or reload the remaining settings at once with 'sysctl --system' (keys that"
  echo "no other sysctl file sets keep their tuned value until reboot or 'sysctl -w key=value')."
}

main() {
  local dry_run=0 revert=0 arg
  for arg in "$@"; do
    case $arg in
      --dry-run) dry_run=1 ;;
      --revert) revert=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      -*)
        echo "$PROG: error: unknown option: $arg" >&2
        echo "Try '$PROG --help'." >&2
        exit 2
        ;;
      *)
        echo "$PROG: error: unexpected argument: $arg" >&2
        echo "Try '$PROG --help'." >&2
        exit 2
        ;;
    esac
  done

  if [[ $revert == 1 ]]; then
    do_revert "$dry_run"
  else
    do_apply "$dry_run"
  fi
}

main "$@"
