#!/usr/bin/env bash
# Builds both packages at a lower and at the current version, installs them into a scratch
# root with dpkg --root (maintainer scripts run outside a chroot with DPKG_ROOT set), and
# checks install, upgrade, remove and purge.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

DEB_OUT_DIR=$work/old PROXLAB_DEB_VERSION=0.0.1 LINTIAN=skip "$here/build-deb.sh" >/dev/null
DEB_OUT_DIR=$work/new "$here/build-deb.sh"

root=$work/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
grep '^root:' /etc/passwd > "$root/etc/passwd"
grep '^root:' /etc/group > "$root/etc/group"
dpkg_root() {
    dpkg --root="$root" --force-script-chrootless --force-depends --force-confold --log=/dev/null "$@"
}

fail() { echo "FAIL: $*" >&2; exit 1; }
check() { local what=$1; shift; if "$@"; then echo "ok: $what"; else fail "$what"; fi; }
version_of() { dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}' "$1" 2>/dev/null || true; }

echo "== install 0.0.1"
dpkg_root -i "$work"/old/*.deb
for bin in proxlab-hub proxlab-agent; do
    check "$bin binary installed" test -x "$root/usr/bin/$bin"
    check "$bin man page" test -s "$root/usr/share/man/man1/$bin.1.gz"
    check "$bin unit" test -f "$root/lib/systemd/system/$bin.service"
    check "$bin enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/$bin.service"
    check "$bin --version runs" "$root/usr/bin/$bin" --version
done
check "hub Grafana dashboard" python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$root/usr/share/proxlab-hub/grafana-dashboard.json"
check "hub system user" grep -q '^proxlab:' "$root/etc/passwd"
check "hub config is a conffile" sh -c "dpkg-query --admindir='$root/var/lib/dpkg' -W -f='\${Conffiles}' proxlab-hub | grep -q /etc/proxlab/hub.toml"
check "agent config is a conffile" sh -c "dpkg-query --admindir='$root/var/lib/dpkg' -W -f='\${Conffiles}' proxlab-agent | grep -q /etc/proxlab/agent.toml"
uid=$(awk -F: '$1 == "proxlab" { print $3 }' "$root/etc/passwd")
check "hub data directory owned by proxlab, mode 0700" test "$(stat -c '%u %a' "$root/var/lib/proxlab")" = "$uid 700"
check "agent state directory mode 0700" test "$(stat -c '%a' "$root/var/lib/proxlab-agent")" = 700

echo "== edit config, add data, upgrade to the current version"
echo 'public_address = "hub.school.example:7443"' >> "$root/etc/proxlab/hub.toml"
echo '#stay' >> "$root/etc/proxlab/agent.toml"
echo kept > "$root/var/lib/proxlab/hub.db"
echo kept > "$root/var/lib/proxlab-agent/enrollment.toml"
dpkg_root -i "$work"/new/*.deb
current=$(ls "$work"/new/proxlab-hub_*.deb | sed 's/.*proxlab-hub_\(.*\)_amd64.deb/\1/')
check "hub upgraded to $current" test "$(version_of proxlab-hub)" = "$current"
check "agent upgraded to $current" test "$(version_of proxlab-agent)" = "$current"
check "edited hub config kept" grep -q hub.school.example "$root/etc/proxlab/hub.toml"
check "edited agent config kept" grep -q '#stay' "$root/etc/proxlab/agent.toml"
check "hub data kept" grep -q kept "$root/var/lib/proxlab/hub.db"
check "agent identity kept" grep -q kept "$root/var/lib/proxlab-agent/enrollment.toml"
check "reinstalling is idempotent" dpkg_root -i "$work"/new/*.deb

echo "== remove keeps data, purge deletes it"
dpkg_root -r proxlab-hub proxlab-agent
check "binaries gone" test ! -e "$root/usr/bin/proxlab-hub"
check "hub data kept after remove" test -f "$root/var/lib/proxlab/hub.db"
check "config kept after remove" test -f "$root/etc/proxlab/hub.toml"
dpkg_root -P proxlab-hub proxlab-agent
check "hub data gone after purge" test ! -e "$root/var/lib/proxlab"
check "agent identity gone after purge" test ! -e "$root/var/lib/proxlab-agent"
check "config gone after purge" test ! -e "$root/etc/proxlab"
check "unit symlinks gone after purge" test ! -e "$root/etc/systemd/system/multi-user.target.wants/proxlab-hub.service"

if command -v systemd-analyze >/dev/null; then
    echo "== systemd-analyze security (hub unit; fails above an exposure of 2.0)"
    systemd-analyze security --offline=true --threshold=20 "$here/hub/proxlab-hub.service" | tail -1
fi
echo "packaging: all checks passed"
