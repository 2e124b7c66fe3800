#!/usr/bin/env bash
# Installs what the `mlir` cargo feature builds against: LLVM 19's MLIR libraries and headers
# from Debian's packages (bookworm's newest LLVM), and the C libraries they link with.
# .cargo/config.toml points mlir-sys and tblgen at /usr/lib/llvm-19.
# Usage: ./scripts/install-mlir.sh   (as root, or with sudo available; does nothing when the
# packages are already installed)
set -euo pipefail

packages=(
    llvm-19-dev libmlir-19-dev mlir-19-tools libpolly-19-dev libclang-19-dev
    libzstd-dev libz3-dev libxml2-dev zlib1g-dev
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-mlir: LLVM 19 MLIR packages already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo > /dev/null; then
    sudo=(sudo)
else
    echo "install-mlir: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
fi
echo "install-mlir: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get install -y -q "${missing[@]}" > /tmp/tessera-install-mlir.log 2>&1 || {
    # A fresh machine may have no package lists yet.
    "${sudo[@]}" apt-get update -q > /dev/null
    "${sudo[@]}" apt-get install -y -q "${missing[@]}" > /tmp/tessera-install-mlir.log 2>&1 || {
        tail -20 /tmp/tessera-install-mlir.log >&2
        echo "install-mlir: apt-get install failed (full log: /tmp/tessera-install-mlir.log)" >&2
        exit 1
    }
}
echo "install-mlir: done"
