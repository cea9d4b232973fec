#!/usr/bin/env bash
# Sets this checkout up on a Debian or Ubuntu machine: host packages, npm dependencies, build.
# Idempotent: what is already there is left alone. Run as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

# Host tools the packages drive and the tests need (QEMU, iproute2/tc, nftables, PostgreSQL...).
APT_PACKAGES=(postgresql qemu-system-x86 qemu-utils iproute2 nftables busybox-static cpio socat iperf3 iputils-ping util-linux python3-openstackclient)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then missing+=("$pkg"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[setup] installing host packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian package starts a cluster of its own; the tests start private servers instead.
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do "${SUDO[@]}" pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true; done
  fi
else
  echo "[setup] host packages present"
fi

# The @nubes/kvm test guest's kernel: Debian's cloud kernel, downloaded with `apt-get download` and
# unpacked with `dpkg -x` into .cache/guest-kernel/ (git-ignored), never installed into the host's /boot.
# Reused when the current version is already there; the apt lists are refreshed once if a step fails.
guest_kernel_dir=.cache/guest-kernel
kernel_pkg() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }'; }
fetch_guest_kernel() {
  local pkg tmp
  pkg="$(kernel_pkg)"
  [ -n "$pkg" ] || return 1
  if [ -f "$guest_kernel_dir/boot/vmlinuz-${pkg#linux-image-}" ]; then echo "[setup] guest kernel present (${pkg#linux-image-})"; return 0; fi
  echo "[setup] downloading the test guest's kernel ($pkg) into $guest_kernel_dir"
  mkdir -p .cache
  tmp="$(mktemp -d .cache/guest-kernel.XXXXXX)"
  chmod 755 "$tmp" # so apt's _apt user can write the download there
  if (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1) && dpkg -x "$tmp"/"$pkg"_*.deb "$tmp/root"; then
    rm -rf "$guest_kernel_dir" && mv "$tmp/root" "$guest_kernel_dir" && rm -rf "$tmp"
  else
    rm -rf "$tmp"
    return 1
  fi
}
if ! fetch_guest_kernel; then
  echo "[setup] refreshing apt lists to find the guest kernel"
  "${SUDO[@]}" apt-get update -qq
  fetch_guest_kernel
fi

node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  echo "[setup] Node.js 20 or newer is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

# Install from package-lock.json only when it changed since the last successful install here.
# `npm install` rather than `npm ci`: npm 11's ci refuses lockfiles that (correctly) leave out other
# platforms' optional binaries (Biome, Rollup, esbuild), while install reads the same lockfile fine.
lock_hash="$(sha256sum package-lock.json package.json | sha256sum | cut -d' ' -f1)"
if [ "$(cat node_modules/.nubes-lock-hash 2>/dev/null)" != "$lock_hash" ]; then
  echo "[setup] npm install (from package-lock.json)"
  npm install --no-audit --no-fund
  sha256sum package-lock.json package.json | sha256sum | cut -d' ' -f1 > node_modules/.nubes-lock-hash
else
  echo "[setup] node_modules match package-lock.json"
fi

echo "[setup] build"
npm run build --silent >/dev/null
echo "[setup] ready"
