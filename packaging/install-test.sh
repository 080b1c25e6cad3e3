#!/usr/bin/env bash
# Install test for the boa-exchange Debian package (SPEC section 8, issue 7).
#
# Builds the .deb with cargo-deb, checks its contents, lints it and its systemd unit,
# installs it with dpkg, runs `boa-exchange serve` as the boa-exchange user the way
# systemd would (there is no systemd in CI), talks to it over HTTP and the control
# socket as root, as a member of the boa-exchange group and as an outsider, upgrades
# it in place, removes it and purges it.
#
# Usage (as root, from anywhere):   packaging/install-test.sh
#   BOA_DEB=path/to.deb   test that package instead of building one
# It installs what it needs (apt-get, cargo-deb) and leaves the machine as it found
# it: the package purged, the test users deleted, and the boa-exchange account too
# unless it existed before. Called as root by .ci/run; prints "N passed, N failed".
# Without root or without dpkg it prints why and exits 0 (skipped).
set -euo pipefail

readonly PKG=boa-exchange
readonly SVC_USER=boa-exchange
readonly SVC_GROUP=boa-exchange
readonly STATE_DIR=/var/lib/boa-exchange
readonly RUNTIME_DIR=/run/boa-exchange
readonly CONF=/etc/boa-exchange/config.toml
readonly SOCK=$RUNTIME_DIR/control.sock
readonly UNIT=/usr/lib/systemd/system/boa-exchange.service
readonly HEALTH_URL=http://127.0.0.1:8000/health
readonly MEMBER=boa-it-member      # test user in the boa-exchange group
readonly OUTSIDER=boa-it-outsider  # test user outside it
readonly DRAIN_LIMIT=35            # TimeoutStopSec= in the unit
readonly WATCHDOG_USEC=4000000     # short, so a ping shows up quickly

say() { printf 'install-test: %s\n' "$*"; }
skip() { say "SKIP: $*"; exit 0; }
indent() { sed 's/^/    /'; }

# --- preconditions: skip (not fail) where this cannot run ---------------------------
if ! command -v dpkg >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    skip "dpkg is absent: this is not a Debian-like system, the .deb cannot be installed here"
fi
if [ "$(id -u)" -ne 0 ]; then
    skip "must run as root (dpkg -i, adduser, starting the daemon as $SVC_USER); try: sudo $0"
fi
if [ -z "${CI:-}" ] && [ -z "${BOA_INSTALL_TEST_FORCE:-}" ]; then
    if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'installed\|config-files'; then
        skip "$PKG is installed on this machine and this test ends by purging it (with its data); set BOA_INSTALL_TEST_FORCE=1 to go on anyway"
    fi
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
export PATH="$HOME/.cargo/bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

passed=0
ok() { passed=$((passed + 1)); say "ok   - $*"; }
fail() {
    say "FAIL - $*"
    say "$passed passed, 1 failed"
    exit 1
}
# check DESCRIPTION CMD...: runs CMD (its stdout dropped), passes when it exits 0
check() {
    local what=$1
    shift
    if "$@" >/dev/null; then ok "$what"; else fail "$what"; fi
}

WORK=$(mktemp -d /tmp/boa-install-test.XXXXXX)
chmod 0755 "$WORK"
DAEMON_PID=""
NOTIFY_PID=""
SVC_USER_EXISTED=no
getent passwd "$SVC_USER" >/dev/null && SVC_USER_EXISTED=yes

cleanup() {
    local rc=$?
    set +e
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID"
        for _ in $(seq 1 "$DRAIN_LIMIT"); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null
    fi
    if [ -n "$NOTIFY_PID" ]; then kill "$NOTIFY_PID" 2>/dev/null; fi
    if [ "$rc" -ne 0 ] && [ -s "$WORK/daemon.log" ]; then
        say "daemon log (last 40 lines):"
        tail -n 40 "$WORK/daemon.log" | indent
    fi
    if dpkg-query -W "$PKG" >/dev/null 2>&1; then dpkg --purge "$PKG" >/dev/null 2>&1; fi
    rm -rf "$RUNTIME_DIR"
    for u in "$MEMBER" "$OUTSIDER"; do
        if getent passwd "$u" >/dev/null; then userdel "$u" 2>/dev/null; fi
        if getent group "$u" >/dev/null; then groupdel "$u" 2>/dev/null; fi
    done
    if [ "$SVC_USER_EXISTED" = no ]; then
        if getent passwd "$SVC_USER" >/dev/null; then userdel "$SVC_USER" 2>/dev/null; fi
        if getent group "$SVC_GROUP" >/dev/null; then groupdel "$SVC_GROUP" 2>/dev/null; fi
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

# --- tools ------------------------------------------------------------------------
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v lintian >/dev/null || need+=(lintian)
command -v curl >/dev/null || need+=(curl)
command -v adduser >/dev/null || need+=(adduser)
command -v setpriv >/dev/null || need+=(util-linux)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v man >/dev/null || need+=(man-db)
dpkg-query -W -f='${Status}' ca-certificates 2>/dev/null | grep -q 'ok installed' || need+=(ca-certificates)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -z "${BOA_DEB:-}" ] && ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb"
    cargo install cargo-deb --locked --version '^3.8' --quiet
fi
PY=""
for p in /usr/bin/python3 "$(command -v python3 || true)"; do
    if [ -n "$p" ] && [ -x "$p" ]; then PY=$p; break; fi
done

# --- 1. build the package -----------------------------------------------------------
if [ -n "${BOA_DEB:-}" ]; then
    DEB=$(realpath "$BOA_DEB")
    say "using $DEB"
else
    say "building the .deb (cargo deb, release profile)"
    DEB=$(cd "$REPO" && cargo deb 2>"$WORK/cargo-deb.log" | tail -n 1) || {
        tail -n 30 "$WORK/cargo-deb.log"
        fail "cargo deb"
    }
fi
check "the .deb exists ($DEB)" test -f "$DEB"

# --- 2. contents, conffiles, control fields -----------------------------------------
dpkg-deb -c "$DEB" >"$WORK/contents"
has_entry() { # MODE PATH (owned by root)
    awk -v m="$1" -v p="$2" '$1 == m && ($2 == "0/0" || $2 == "root/root") && $NF == p { found = 1 }
        END { exit !found }' "$WORK/contents"
}
check "file list: /usr/bin/boa-exchange 0755" has_entry -rwxr-xr-x ./usr/bin/boa-exchange
check "file list: the systemd unit" has_entry -rw-r--r-- ./usr/lib/systemd/system/boa-exchange.service
check "file list: /etc/boa-exchange/config.toml 0640 (never world-readable)" has_entry -rw-r----- ./etc/boa-exchange/config.toml
check "file list: boa-exchange(8)" has_entry -rw-r--r-- ./usr/share/man/man8/boa-exchange.8.gz
check "file list: the backup service" has_entry -rw-r--r-- ./usr/lib/systemd/system/boa-exchange-backup.service
check "file list: the backup timer" has_entry -rw-r--r-- ./usr/lib/systemd/system/boa-exchange-backup.timer
check "file list: bash completion" has_entry -rw-r--r-- ./usr/share/bash-completion/completions/boa-exchange
check "file list: zsh completion" has_entry -rw-r--r-- ./usr/share/zsh/vendor-completions/_boa-exchange
check "file list: fish completion" has_entry -rw-r--r-- ./usr/share/fish/vendor_completions.d/boa-exchange.fish
check "file list: example alert rules" has_entry -rw-r--r-- ./usr/share/doc/boa-exchange/examples/monitoring/boa-exchange.rules.yml
check "file list: example Grafana dashboard" has_entry -rw-r--r-- ./usr/share/doc/boa-exchange/examples/monitoring/grafana-dashboard.json
check "file list: example nginx site" has_entry -rw-r--r-- ./usr/share/doc/boa-exchange/examples/nginx/boa-exchange.conf
check "file list: copyright" has_entry -rw-r--r-- ./usr/share/doc/boa-exchange/copyright
check "file list: changelog.Debian.gz" has_entry -rw-r--r-- ./usr/share/doc/boa-exchange/changelog.Debian.gz
check "file list: no data directory shipped (postinst creates it, purge deletes it)" \
    bash -c "! grep -q '\./var/' '$WORK/contents'"
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./etc/boa-exchange/config.toml >"$WORK/config.toml"
check "the conffile is config.example.toml" cmp -s "$WORK/config.toml" "$REPO/config.example.toml"

dpkg-deb -e "$DEB" "$WORK/control"
check "conffiles lists exactly /etc/boa-exchange/config.toml" \
    test "$(cat "$WORK/control/conffiles")" = /etc/boa-exchange/config.toml
depends=$(dpkg-deb -f "$DEB" Depends)
check "Depends: ca-certificates ($depends)" grep -qw ca-certificates <<<"$depends"
check "Depends: adduser (used by postinst)" grep -qw adduser <<<"$depends"
check "extended description present" test "$(dpkg-deb -f "$DEB" Description | wc -l)" -gt 3
user_line=$(grep -n 'adduser --system' "$WORK/control/postinst" | head -n 1 | cut -d: -f1)
helper_line=$(grep -n 'deb-systemd-helper' "$WORK/control/postinst" | head -n 1 | cut -d: -f1)
check "postinst creates the user before the systemd snippets run" \
    test -n "$user_line" -a -n "$helper_line" -a "${user_line:-0}" -lt "${helper_line:-0}"
check "postrm deletes $STATE_DIR on purge" grep -q "rm -rf $STATE_DIR" "$WORK/control/postrm"
for s in postinst postrm prerm; do
    if [ -f "$WORK/control/$s" ]; then check "$s is valid sh" sh -n "$WORK/control/$s"; fi
done

lintian_out=$(lintian --fail-on error --tag-display-limit 0 "$DEB" 2>&1) && lintian_rc=0 || lintian_rc=$?
say "lintian (exit $lintian_rc):"
grep -v 'running with root privileges' <<<"$lintian_out" | indent || true
check "lintian reports no errors" test "$lintian_rc" -eq 0

# --- 3. the unit: security exposure and verify ---------------------------------------
# systemd-analyze's --threshold is on its internal 0-100 scale (the printed level
# times ten): 20 means "exposure 2.0 or lower".
sec_out=$(systemd-analyze security --offline=true --threshold=20 "$REPO/systemd/boa-exchange.service" 2>&1) && sec_rc=0 || sec_rc=$?
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$sec_out")
say "systemd-analyze security: overall exposure ${exposure:-?}"
check "systemd-analyze security --offline=true: exposure ${exposure:-?} <= 2.0" \
    test "$sec_rc" -eq 0 -a -n "$exposure"

# --- 4. install ---------------------------------------------------------------------
if dpkg-query -W "$PKG" >/dev/null 2>&1; then
    say "purging a $PKG left over from an earlier run"
    dpkg --purge "$PKG" >/dev/null
fi
for u in "$MEMBER" "$OUTSIDER"; do # left over from an interrupted run
    if getent passwd "$u" >/dev/null; then userdel "$u"; fi
    if getent group "$u" >/dev/null; then groupdel "$u"; fi
done
dpkg -i "$DEB" </dev/null >"$WORK/dpkg-install.log" 2>&1 || { cat "$WORK/dpkg-install.log"; fail "dpkg -i"; }
ok "dpkg -i"
check "dpkg reports $PKG installed" bash -c "dpkg-query -W -f='\${Status}' $PKG | grep -q 'install ok installed'"
check "system user $SVC_USER exists" getent passwd "$SVC_USER"
check "system group $SVC_GROUP exists" getent group "$SVC_GROUP"
check "$SVC_USER is a system account (uid < 1000) with no login shell" bash -c \
    "getent passwd $SVC_USER | awk -F: '\$3 < 1000 && \$7 ~ /nologin|false/ { f = 1 } END { exit !f }'"
check "$STATE_DIR is 0700 $SVC_USER:$SVC_GROUP" \
    test "$(stat -c '%a %U %G' "$STATE_DIR")" = "700 $SVC_USER $SVC_GROUP"
check "$CONF is 0640 root:$SVC_GROUP" test "$(stat -c '%a %U %G' "$CONF")" = "640 root $SVC_GROUP"
check "/usr/bin/boa-exchange is installed" test -x /usr/bin/boa-exchange
check "the unit is installed at $UNIT" test -f "$UNIT"
check "the unit is not enabled on first install (it needs Intuit keys first)" \
    test ! -e /etc/systemd/system/multi-user.target.wants/boa-exchange.service
# verify also runs `man` for Documentation=man:boa-exchange(8); minimal images that
# drop man pages (dpkg path-exclude) get --man=no instead.
verify_args=()
if [ -e /usr/share/man/man8/boa-exchange.8.gz ]; then
    check "man -w 8 boa-exchange finds the page" bash -c "man -w 8 boa-exchange >/dev/null"
else
    say "note: dpkg excludes man pages on this machine; verifying with --man=no"
    verify_args+=(--man=no)
fi
if [ -e /usr/share/man/man8/boa-exchange.8.gz ]; then
    check "man boa-exchange lists the subcommands (status, completions)" bash -c \
        "MANWIDTH=80 man -P cat 8 boa-exchange 2>/dev/null | grep -q 'boa-exchange completions' && MANWIDTH=80 man -P cat 8 boa-exchange | grep -q 'boa-exchange status'"
fi
check "the installed bash completion completes subcommands (boa-exchange st<TAB>)" bash -c \
    "source /usr/share/bash-completion/completions/boa-exchange; COMP_WORDS=(boa-exchange st); COMP_CWORD=1; COMP_LINE='boa-exchange st'; COMP_POINT=\${#COMP_LINE}; _boa__exchange boa-exchange st boa-exchange; printf '%s\n' \"\${COMPREPLY[@]}\" | grep -qx status"
check "the installed bash completion is what the binary prints" \
    bash -c "/usr/bin/boa-exchange completions bash | cmp -s - /usr/share/bash-completion/completions/boa-exchange"
if command -v promtool >/dev/null 2>&1; then
    check "promtool check rules on the installed example" promtool check rules /usr/share/doc/boa-exchange/examples/monitoring/boa-exchange.rules.yml
fi
verify_out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "${verify_args[@]}" "$UNIT" 2>&1) && verify_rc=0 || verify_rc=$?
if [ -n "$verify_out" ]; then indent <<<"$verify_out"; fi
check "systemd-analyze verify $UNIT" test "$verify_rc" -eq 0
BACKUP_UNITS=(/usr/lib/systemd/system/boa-exchange-backup.service /usr/lib/systemd/system/boa-exchange-backup.timer)
bverify_out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "${verify_args[@]}" "${BACKUP_UNITS[@]}" 2>&1) && bverify_rc=0 || bverify_rc=$?
if [ -n "$bverify_out" ]; then indent <<<"$bverify_out"; fi
check "systemd-analyze verify the backup service and timer" test "$bverify_rc" -eq 0
check "the backup timer is not enabled on install" \
    test ! -e /etc/systemd/system/timers.target.wants/boa-exchange-backup.timer

as_user() { # USER CMD...: run CMD as USER with USER's groups, like User= does
    local u=$1
    shift
    setpriv --reuid="$u" --regid="$(id -gn "$u")" --init-groups --no-new-privs -- "$@"
}
check "check-config accepts the installed config (as $SVC_USER)" \
    as_user "$SVC_USER" /usr/bin/boa-exchange check-config --config "$CONF"

# --- 5. run the daemon as systemd would ---------------------------------------------
start_notify_listener() {
    NOTIFY_SOCKET_PATH=""
    [ -n "$PY" ] || return 0
    mkdir -p "$WORK/notify"
    chmod 0755 "$WORK/notify"
    NOTIFY_SOCKET_PATH=$WORK/notify/notify.sock
    rm -f "$NOTIFY_SOCKET_PATH" "$WORK/notify.log"
    : >"$WORK/notify.log"
    "$PY" -c '
import os, socket, sys
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
with open(log, "a", buffering=1) as out:
    while True:
        for line in s.recv(65536).decode("utf-8", "replace").splitlines():
            out.write(line + "\n")
' "$NOTIFY_SOCKET_PATH" "$WORK/notify.log" &
    NOTIFY_PID=$!
    for _ in $(seq 1 50); do [ -S "$NOTIFY_SOCKET_PATH" ] && return 0; sleep 0.1; done
    fail "notify listener did not start"
}
stop_notify_listener() {
    if [ -n "$NOTIFY_PID" ]; then kill "$NOTIFY_PID" 2>/dev/null || true; wait "$NOTIFY_PID" 2>/dev/null || true; fi
    NOTIFY_PID=""
}

start_daemon() { # LABEL
    if curl -s -o /dev/null --max-time 2 "$HEALTH_URL"; then
        fail "something already answers on $HEALTH_URL: free port 8000 first"
    fi
    # RuntimeDirectory=boa-exchange, RuntimeDirectoryMode=0750
    install -d -m 0750 -o "$SVC_USER" -g "$SVC_GROUP" "$RUNTIME_DIR"
    start_notify_listener
    local -a env=(
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin
        HOME="$STATE_DIR" USER="$SVC_USER" LOGNAME="$SVC_USER" SHELL=/usr/sbin/nologin
        LANG=C.UTF-8
        STATE_DIRECTORY="$STATE_DIR" RUNTIME_DIRECTORY="$RUNTIME_DIR"
        CONFIGURATION_DIRECTORY=/etc/boa-exchange
    )
    if [ -n "$NOTIFY_SOCKET_PATH" ]; then
        env+=(NOTIFY_SOCKET="$NOTIFY_SOCKET_PATH" WATCHDOG_USEC="$WATCHDOG_USEC")
    fi
    # The subshell execs setpriv, which execs env, which execs the daemon: one pid
    # all along, so WATCHDOG_PID=$BASHPID names the daemon as systemd's would.
    (
        cd /
        umask 0077
        exec setpriv --reuid="$SVC_USER" --regid="$SVC_GROUP" --init-groups --no-new-privs \
            --bounding-set=-all --inh-caps=-all -- \
            env -i "${env[@]}" WATCHDOG_PID="$BASHPID" \
            /usr/bin/boa-exchange serve --config "$CONF"
    ) >>"$WORK/daemon.log" 2>&1 </dev/null &
    DAEMON_PID=$!
    say "started boa-exchange serve as $SVC_USER (pid $DAEMON_PID, $1)"

    local body="" code=""
    for _ in $(seq 1 120); do
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "boa-exchange serve exited during start-up ($1)"
        code=$(curl -s -o "$WORK/health.json" -w '%{http_code}' --max-time 2 "$HEALTH_URL" || true)
        if [ "$code" = 200 ] || [ "$code" = 503 ]; then break; fi
        sleep 0.5
    done
    body=$(cat "$WORK/health.json" 2>/dev/null || true)
    say "GET /health -> HTTP $code: $body"
    if [ -n "$PY" ]; then
        check "/health answers JSON with \"status\" ($1)" "$PY" -c \
            'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if "status" in d else 1)' "$WORK/health.json"
    else
        check "/health answers JSON with \"status\" ($1)" grep -q '"status"' "$WORK/health.json"
    fi
    if [ -n "$NOTIFY_SOCKET_PATH" ]; then
        for _ in $(seq 1 50); do grep -qx 'READY=1' "$WORK/notify.log" && break; sleep 0.1; done
        check "sd_notify READY=1 received ($1)" grep -qx 'READY=1' "$WORK/notify.log"
    fi
    for _ in $(seq 1 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
    check "control socket $SOCK exists ($1)" test -S "$SOCK"
}

stop_daemon() { # LABEL
    local t0 t1 rc=0
    [ -n "$NOTIFY_SOCKET_PATH" ] && : >"$WORK/notify.log"
    t0=$(date +%s)
    kill -TERM "$DAEMON_PID"
    for _ in $(seq 1 $((DRAIN_LIMIT * 10))); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        fail "boa-exchange serve still running ${DRAIN_LIMIT}s after SIGTERM ($1)"
    fi
    wait "$DAEMON_PID" || rc=$?
    t1=$(date +%s)
    DAEMON_PID=""
    say "SIGTERM -> exit $rc after $((t1 - t0))s"
    check "SIGTERM: clean exit 0 within TimeoutStopSec ($1)" test "$rc" -eq 0
    if [ -n "$NOTIFY_SOCKET_PATH" ]; then
        check "sd_notify STOPPING=1 on SIGTERM ($1)" grep -qx 'STOPPING=1' "$WORK/notify.log"
    fi
    stop_notify_listener
    rm -rf "$RUNTIME_DIR" # systemd removes the RuntimeDirectory= when the unit stops
}

if [ -z "$PY" ]; then say "note: no python3, so the sd_notify checks are skipped"; fi
start_daemon "fresh install"

if [ -n "$NOTIFY_SOCKET_PATH" ]; then
    for _ in $(seq 1 $((WATCHDOG_USEC * 2 / 100000))); do grep -qx 'WATCHDOG=1' "$WORK/notify.log" && break; sleep 0.1; done
    check "sd_notify WATCHDOG=1 pings (WATCHDOG_USEC=$WATCHDOG_USEC)" grep -qx 'WATCHDOG=1' "$WORK/notify.log"
fi
check "control socket is 0660 $SVC_USER:$SVC_GROUP" \
    test "$(stat -c '%a %U %G' "$SOCK")" = "660 $SVC_USER $SVC_GROUP"
check "/run/boa-exchange is 0750 $SVC_USER:$SVC_GROUP" \
    test "$(stat -c '%a %U %G' "$RUNTIME_DIR")" = "750 $SVC_USER $SVC_GROUP"
check "identity.txt created 0600 $SVC_USER in $STATE_DIR" \
    test "$(stat -c '%a %U' "$STATE_DIR/identity.txt" 2>/dev/null)" = "600 $SVC_USER"
check "the store lives in $STATE_DIR (\$STATE_DIRECTORY), not beside the config" \
    bash -c "[ \$(find '$STATE_DIR' -mindepth 1 -not -name identity.txt | wc -l) -gt 0 ] && [ ! -e /etc/boa-exchange/data ]"

# status over the control socket
out=$(/usr/bin/boa-exchange --socket "$SOCK" status 2>&1) && rc=0 || rc=$?
indent <<<"$out"
check "boa-exchange status as root: exit 0" test "$rc" -eq 0
out=$(/usr/bin/boa-exchange --socket "$SOCK" --json status 2>&1) && rc=0 || rc=$?
check "boa-exchange --json status as root: exit 0" test "$rc" -eq 0
if [ -n "$PY" ]; then
    check "boa-exchange --json status prints JSON" "$PY" -c 'import json, sys; json.loads(sys.stdin.read())' <<<"$out"
fi
out=$(/usr/bin/boa-exchange status 2>&1) && rc=0 || rc=$?
if [ "$rc" -eq 0 ]; then
    ok "boa-exchange status as root without --socket finds $SOCK"
else
    say "WARN - 'boa-exchange status' without --socket exits $rc: the admin client does not find $SOCK from the installed config; admins must pass --socket $SOCK"
    indent <<<"$out"
fi

useradd --system --no-create-home --shell /usr/sbin/nologin --user-group --groups "$SVC_GROUP" "$MEMBER"
useradd --system --no-create-home --shell /usr/sbin/nologin --user-group "$OUTSIDER"
out=$(as_user "$MEMBER" /usr/bin/boa-exchange --socket "$SOCK" status 2>&1) && rc=0 || rc=$?
[ "$rc" -eq 0 ] || indent <<<"$out"
check "boa-exchange status as $MEMBER (supplementary group $SVC_GROUP): exit 0" test "$rc" -eq 0
out=$(as_user "$OUTSIDER" /usr/bin/boa-exchange --socket "$SOCK" status 2>&1) && rc=0 || rc=$?
say "as $OUTSIDER: exit $rc: $(head -n 1 <<<"$out")"
check "boa-exchange status as $OUTSIDER (not in $SVC_GROUP) is refused: exit non-zero" test "$rc" -ne 0

# A backup as the service user (what boa-exchange-backup.service runs), then a dry-run
# restore of it against a fresh folder with the same identity.
BK_DIR=$(mktemp -d)
chown "$SVC_USER:$SVC_GROUP" "$BK_DIR"
out=$(as_user "$SVC_USER" /usr/bin/boa-exchange --socket "$SOCK" backup "$BK_DIR/b.jsonl" 2>&1) && rc=0 || rc=$?
[ "$rc" -eq 0 ] || indent <<<"$out"
check "boa-exchange backup as $SVC_USER: exit 0" test "$rc" -eq 0
check "the backup file is 0600 $SVC_USER" test "$(stat -c '%a %U' "$BK_DIR/b.jsonl" 2>/dev/null)" = "600 $SVC_USER"
printf '[storage]\ndata_dir = "%s/restored"\nidentity_file = "%s/identity.txt"\n' "$BK_DIR" "$STATE_DIR" >"$BK_DIR/restore.toml"
out=$(/usr/bin/boa-exchange restore "$BK_DIR/b.jsonl" --config "$BK_DIR/restore.toml" --dry-run 2>&1) && rc=0 || rc=$?
[ "$rc" -eq 0 ] || indent <<<"$out"
check "boa-exchange restore --dry-run of that backup: exit 0, nothing written" \
    test "$rc" -eq 0 -a ! -e "$BK_DIR/restored"
rm -rf "$BK_DIR"

# SIGHUP (ExecReload=) re-reads the config; the daemon carries on
kill -HUP "$DAEMON_PID"
sleep 1
check "SIGHUP: the daemon is still running" kill -0 "$DAEMON_PID"
check "SIGHUP: /health still answers" bash -c "curl -s --max-time 5 '$HEALTH_URL' | grep -q '\"status\"'"

stop_daemon "fresh install"

# --- 6. upgrade in place keeps the data and an edited conffile -----------------------
id_sum=$(sha256sum "$STATE_DIR/identity.txt" | cut -d' ' -f1)
install -m 0600 -o "$SVC_USER" -g "$SVC_GROUP" /dev/null "$STATE_DIR/install-test.marker"
marker="# install-test: edited by the admin $(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf '%s\n' "$marker" >>"$CONF"
dpkg -i "$DEB" </dev/null >"$WORK/dpkg-upgrade.log" 2>&1 || { cat "$WORK/dpkg-upgrade.log"; fail "dpkg -i (upgrade in place)"; }
ok "dpkg -i the same package again (upgrade in place)"
check "upgrade: the edited conffile is kept" grep -qxF "$marker" "$CONF"
check "upgrade: $CONF still 0640 root:$SVC_GROUP" test "$(stat -c '%a %U %G' "$CONF")" = "640 root $SVC_GROUP"
check "upgrade: identity.txt unchanged" \
    test "$(sha256sum "$STATE_DIR/identity.txt" | cut -d' ' -f1)" = "$id_sum"
check "upgrade: other data in $STATE_DIR kept" test -f "$STATE_DIR/install-test.marker"
check "upgrade: $STATE_DIR still 0700 $SVC_USER" test "$(stat -c '%a %U' "$STATE_DIR")" = "700 $SVC_USER"
check "upgrade: check-config accepts the edited config" \
    as_user "$SVC_USER" /usr/bin/boa-exchange check-config --config "$CONF"
start_daemon "after upgrade"
check "after upgrade: status works on the kept store" /usr/bin/boa-exchange --socket "$SOCK" status
check "after upgrade: the identity was reused, not replaced" \
    test "$(sha256sum "$STATE_DIR/identity.txt" | cut -d' ' -f1)" = "$id_sum"
stop_daemon "after upgrade"

# --- 7. remove keeps data and config; purge deletes them -----------------------------
dpkg -r "$PKG" </dev/null >"$WORK/dpkg-remove.log" 2>&1 || { cat "$WORK/dpkg-remove.log"; fail "dpkg -r"; }
ok "dpkg -r"
check "remove: the binary is gone" test ! -e /usr/bin/boa-exchange
check "remove: $STATE_DIR and identity.txt kept" test -f "$STATE_DIR/identity.txt"
check "remove: the conffile is kept" grep -qxF "$marker" "$CONF"

dpkg --purge "$PKG" </dev/null >"$WORK/dpkg-purge.log" 2>&1 || { cat "$WORK/dpkg-purge.log"; fail "dpkg --purge"; }
ok "dpkg --purge"
check "purge: $STATE_DIR deleted" test ! -e "$STATE_DIR"
check "purge: /etc/boa-exchange deleted" test ! -e /etc/boa-exchange
check "purge: the stat override is gone" bash -c "! dpkg-statoverride --list $CONF >/dev/null"
check "purge: dpkg forgot the package" bash -c "! dpkg-query -W -f='\${Status}' $PKG 2>/dev/null | grep -q 'installed\|config-files'"
check "purge: the $SVC_USER account is kept (Debian practice for system users)" getent passwd "$SVC_USER"

say "$passed passed, 0 failed"
