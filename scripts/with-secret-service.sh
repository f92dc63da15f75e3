#!/usr/bin/env bash
# Run a command (e.g. `cargo test`) against a real, unlocked Secret Service (gnome-keyring) on a
# private D-Bus session bus, on a headless Linux machine such as CI. Usage:
#   scripts/with-secret-service.sh cargo test
# Nothing touches the user's real keyrings: the bus, the daemon and the "login" collection live in
# a throw-away directory that is deleted afterwards. Inside, REAL_SECRET_SERVICE=1 tells the
# real-keychain tests (tests/store_keychain.rs) to run; plain `cargo test` skips them.
# Recipe and measurements: docs real-keychain-in-ci.md / rust-stack.md §2.
set -euo pipefail

if [[ -z "${_WITH_SS_INNER:-}" ]]; then
  if ! command -v gnome-keyring-daemon >/dev/null || ! command -v dbus-run-session >/dev/null \
     || ! command -v dbus-send >/dev/null || ! command -v secret-tool >/dev/null; then
    sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    echo "with-secret-service: installing gnome-keyring, dbus, libsecret-tools" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      gnome-keyring dbus libsecret-tools >/dev/null
  fi
  # Throw-away XDG dirs, exported BEFORE dbus-run-session: the bus daemon and the D-Bus-activated
  # gnome-keyring-daemon inherit the bus's environment, and would otherwise write the real home's
  # keyrings. HOME stays as it is (cargo and rustup live there).
  SS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/with-secret-service.XXXXXX")
  trap 'rm -rf "$SS_DIR"' EXIT
  mkdir -p "$SS_DIR/data" "$SS_DIR/cache" "$SS_DIR/config" "$SS_DIR/run"
  chmod 700 "$SS_DIR" "$SS_DIR/run"
  export XDG_DATA_HOME=$SS_DIR/data XDG_CACHE_HOME=$SS_DIR/cache \
         XDG_CONFIG_HOME=$SS_DIR/config XDG_RUNTIME_DIR=$SS_DIR/run _WITH_SS_INNER=1
  # No display: an unlock prompt must fail at once instead of waiting for a click.
  unset DISPLAY WAYLAND_DISPLAY
  rc=0
  dbus-run-session -- "$0" "$@" || rc=$?
  exit "$rc"
fi

# --- Inside the private session bus. ---
# Create and unlock the "login" collection (the `default` alias). The password must not be
# empty: an empty one leaves the collection unusable (NoStorageAccess). It protects nothing here.
printf '%s' "${CI_KEYRING_PASSWORD:-ci-not-secret}" \
  | gnome-keyring-daemon --unlock --components=secrets >/dev/null

# --unlock forks: wait until the daemon owns org.freedesktop.secrets (usually 0-1 polls).
owned=""
for _ in $(seq 1 100); do
  if dbus-send --session --print-reply --dest=org.freedesktop.DBus / \
       org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null \
       | grep -q 'boolean true'; then
    owned=1
    break
  fi
  sleep 0.1
done
if [[ -z "$owned" ]]; then
  echo "with-secret-service: gnome-keyring did not take org.freedesktop.secrets within 10 s" >&2
  exit 1
fi
# The daemon forked away from us; remember its PID (from the bus) so it is stopped at the end
# even if it does not exit with the bus on its own.
keyring_pid=$(dbus-send --session --print-reply --dest=org.freedesktop.DBus / \
  org.freedesktop.DBus.GetConnectionUnixProcessID string:org.freedesktop.secrets 2>/dev/null \
  | awk '/uint32/ {print $2}' || true)
stop_keyring() { [[ -n "${keyring_pid:-}" ]] && kill "$keyring_pid" 2>/dev/null || true; }
trap stop_keyring EXIT

# Smoke test with libsecret's own client, so a broken keyring fails here with a clear message
# rather than as a confusing test failure.
printf probe | secret-tool store --label=with-secret-service-probe with-secret-service-probe 1
if [[ "$(secret-tool lookup with-secret-service-probe 1)" != probe ]]; then
  echo "with-secret-service: secret-tool could not read back its probe item" >&2
  exit 1
fi
secret-tool clear with-secret-service-probe 1
echo "with-secret-service: Secret Service ready (private bus, login collection unlocked)" >&2

export REAL_SECRET_SERVICE=1
"$@"
