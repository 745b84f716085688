#!/usr/bin/env bash
# Proof that the one zipapp runs on ARM: a minimal arm64 Debian root (debootstrap),
# the arm64 CPython in it run under qemu-user, `edgenet.pyz --version`, then a
# headless device session (client on arm64) against a server on this machine
# (x86-64), over loopback.
#
# Usage: docs/deploy/arm-check.sh [PYZ]       (make arm-check)
# Env:   ARM_ROOT   where the arm64 root lives (default build/arm64-root; reused if present)
#        SUITE      Debian suite (default bookworm)   MIRROR  (default http://deb.debian.org/debian)
# Needs root (debootstrap), debootstrap and qemu-user-static; installs them with apt-get
# when missing and allowed. Slow (a few minutes the first time): not part of `make test`.
#
# The root is built with `debootstrap --foreign` and every downloaded package is then
# unpacked with dpkg-deb, so no arm64 program has to run during the build, and the
# arm64 python is started explicitly as `qemu-aarch64-static -L ROOT ROOT/usr/bin/python3`:
# neither step needs binfmt_misc, which containers often cannot register.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYZ=${1:-build/edgenet.pyz}
ARM_ROOT=${ARM_ROOT:-build/arm64-root}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
HOST_PY=${HOST_PY:-python3}

say() { printf 'arm-check: %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }

[ -f "$PYZ" ] || fail "$PYZ not found (run make pyz)"
PYZ=$(cd "$(dirname "$PYZ")" && pwd)/$(basename "$PYZ")

QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
if [ -z "$QEMU" ] || ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing debootstrap and qemu-user-static"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static >/dev/null
        QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64)
    else
        fail "needs debootstrap and qemu-user-static (apt-get install debootstrap qemu-user-static)"
    fi
fi

if [ ! -x "$ARM_ROOT/usr/bin/python3" ]; then
    [ "$(id -u)" = 0 ] || fail "building the arm64 root needs root (debootstrap)"
    say "building a minimal arm64 $SUITE root in $ARM_ROOT (debootstrap --foreign)"
    rm -rf "$ARM_ROOT"
    mkdir -p "$ARM_ROOT"
    debootstrap --arch=arm64 --variant=minbase --foreign --include=python3 \
        "$SUITE" "$ARM_ROOT" "$MIRROR" > build/arm-debootstrap.log 2>&1 \
        || { tail -20 build/arm-debootstrap.log; fail "debootstrap"; }
    # Stage one unpacks only the required set; unpack everything it fetched (python3 too).
    for deb in "$ARM_ROOT"/var/cache/apt/archives/*.deb; do
        dpkg-deb -x "$deb" "$ARM_ROOT"
    done
fi

ARMPY=("$QEMU" -L "$ARM_ROOT" "$ARM_ROOT/usr/bin/python3")
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
# shiv unpacks the bundled packages on first run; keep that out of $HOME.
export SHIV_ROOT=$WORK/shiv

say "host: $(uname -m), $("$HOST_PY" --version 2>&1)"
say "qemu: $("$QEMU" --version | head -1)"
ARCH=$("${ARMPY[@]}" -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])')
say "arm64 python under qemu: $ARCH"
case "$ARCH" in aarch64*) ;; *) fail "the emulated python is not aarch64: $ARCH" ;; esac

VERSION=$("${ARMPY[@]}" "$PYZ" --version)
say "edgenet.pyz --version on aarch64: $VERSION"

printf 'alpha alphapass\nbeta betapass\n' > "$WORK/credentials.txt"
mkdir -p "$WORK/server" "$WORK/device"
"$HOST_PY" "$PYZ" server 0 3 --host 127.0.0.1 --credentials "$WORK/credentials.txt" \
    --data-dir "$WORK/server" --no-admin --log-format json 2> "$WORK/server.log" &
SERVER_PID=$!
PORT=
for _ in $(seq 1 200); do
    PORT=$("$HOST_PY" - "$WORK/server.log" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("event") == "server_ready":
        print(event["port"])
        break
PY
)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; fail "server exited"; }
    sleep 0.1
done
[ -n "$PORT" ] || fail "server not ready in 20 s"
say "server (x86-64) on 127.0.0.1:$PORT"

# The session: a headless device, then the stdin-scripted shell.
START=$(date +%s)
set +e
EDGENET_PASSWORD=alphapass timeout 300 "${ARMPY[@]}" "$PYZ" client 127.0.0.1 "$PORT" 0 \
    --data-dir "$WORK/device" --name alpha --json \
    --run "EDG 1 100; UED 1; SCS 1 SUM; SCS 1 MAX; AED; DTE 1" > "$WORK/headless.out" 2> "$WORK/headless.err"
RC=$?
set -e
cat "$WORK/headless.out"
[ "$RC" = 0 ] || { cat "$WORK/headless.err"; fail "headless session exited $RC"; }
SUM=$("$HOST_PY" -c 'import sys; print(sum(int(x) for x in open(sys.argv[1]).read().split()))' \
    "$WORK/device/alpha-1.txt")
grep -q "\"result\": \"$SUM\"" "$WORK/headless.out" || fail "SUM on the server is not $SUM"

printf 'beta\nbetapass\nEDG 2 10\nUED 2\nSCS 2 MIN\nOUT\n' | timeout 300 "${ARMPY[@]}" "$PYZ" \
    client 127.0.0.1 "$PORT" 0 --data-dir "$WORK/device" > "$WORK/scripted.out" 2>&1 \
    || { cat "$WORK/scripted.out"; fail "scripted session"; }
grep -q "the MIN of file 2 is" "$WORK/scripted.out" || { cat "$WORK/scripted.out"; fail "scripted output"; }
grep -q '"event": "upload"' "$WORK/server.log" || fail "no upload event on the server"
say "sessions took $(( $(date +%s) - START )) s under emulation"
say "OK: $VERSION runs on aarch64 ($ARCH) with the server on $(uname -m)"
