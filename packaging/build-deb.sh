#!/usr/bin/env bash
# Builds proxlab-agent_<version>_amd64.deb and proxlab-hub_<version>_amd64.deb from the
# workspace into $DEB_OUT_DIR (default packaging/out), then runs lintian on them.
#   PROXLAB_DEB_VERSION  package version (default: the workspace version)
#   LINTIAN=skip         build without lintian (for a quick look only)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# Not OUT_DIR: cargo compares it with the hub's include!(env!("OUT_DIR")) and would rebuild.
out=${DEB_OUT_DIR:-$here/out}
target=${CARGO_TARGET_DIR:-$top/target}
version=${PROXLAB_DEB_VERSION:-$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' "$top/Cargo.toml")}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}

(cd "$top" && cargo build --release --locked -p proxlab-agent -p proxlab-hub)
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build() {
    local pkg=$1 bin=proxlab-$1
    local stage=$work/$bin
    install -D -m 0755 "$target/release/$bin" "$stage/usr/bin/$bin"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/$bin"
    install -d "$stage/usr/share/man/man1"
    "$stage/usr/bin/$bin" man | gzip -9n > "$stage/usr/share/man/man1/$bin.1.gz"
    install -D -m 0644 "$here/$pkg/$bin.service" "$stage/lib/systemd/system/$bin.service"
    install -D -m 0644 "$top/$pkg/$pkg.example.toml" "$stage/etc/proxlab/$pkg.toml"
    if [ "$pkg" = hub ]; then
        install -D -m 0644 "$here/grafana/proxlab-dashboard.json" "$stage/usr/share/$bin/grafana-dashboard.json"
    fi
    if [ -f "$here/$pkg/sysusers.conf" ]; then
        install -D -m 0644 "$here/$pkg/sysusers.conf" "$stage/usr/lib/sysusers.d/$bin.conf"
    fi
    install -D -m 0644 "$here/common/copyright" "$stage/usr/share/doc/$bin/copyright"
    sed "s/@VERSION@/$version/" "$here/common/changelog" | gzip -9n > "$stage/usr/share/doc/$bin/changelog.gz"
    chmod 0644 "$stage/usr/share/doc/$bin/changelog.gz" "$stage/usr/share/man/man1/$bin.1.gz"

    install -d -m 0755 "$stage/DEBIAN"
    local size
    size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
    sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$here/$pkg/control" > "$stage/DEBIAN/control"
    install -m 0644 "$here/$pkg/conffiles" "$stage/DEBIAN/conffiles"
    for script in postinst prerm postrm; do
        install -m 0755 "$here/$pkg/$script" "$stage/DEBIAN/$script"
    done
    (cd "$stage" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
    chmod 0644 "$stage/DEBIAN/md5sums"
    find "$stage" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
    dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/${bin}_${version}_amd64.deb" >/dev/null
    echo "built $out/${bin}_${version}_amd64.deb"
}

build agent
build hub

if [ "${LINTIAN:-}" = skip ]; then
    echo "lintian skipped (LINTIAN=skip)"
    exit 0
fi
if ! command -v lintian >/dev/null; then
    echo "lintian is not installed: apt-get install lintian (or LINTIAN=skip)" >&2
    exit 1
fi
lintian --fail-on error,warning --suppress-tags-from-file "$here/lintian-suppressed" \
    "$out/proxlab-agent_${version}_amd64.deb" "$out/proxlab-hub_${version}_amd64.deb"
echo "lintian: no errors or warnings"
