# Step: the build machine's own tools, installed once (idempotent: apt runs only when
# something is missing). Keep this list in step with scripts/apt-packages.txt, from which
# scripts/setup installs them too. LIFEBOAT_BUILD_NO_INSTALL=1 (the test suite's ISO build)
# never installs anything: a missing tool stops the build and names scripts/setup.

BUILD_DEPS=(mmdebstrap squashfs-tools xorriso mtools dosfstools cpio zstd busybox-static
            grub-pc-bin grub-efi-amd64-bin grub-common shim-signed grub-efi-amd64-signed
            kmod debian-archive-keyring)

deps_install() {
    local missing=() p
    for p in "${BUILD_DEPS[@]}"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ] && [ "${LIFEBOAT_BUILD_NO_INSTALL:-}" = 1 ]; then
        log "deps: missing ${missing[*]}; run scripts/setup as root (LIFEBOAT_BUILD_NO_INSTALL=1 installs nothing)"
        exit 1
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "deps: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
    # The app is frozen with Debian's python so its glibc matches the live system's.
    if [ ! -x "$ROOT/.venv/bin/pyinstaller" ]; then
        if [ "${LIFEBOAT_BUILD_NO_INSTALL:-}" = 1 ]; then
            log "deps: the project venv lacks pyinstaller; run scripts/setup"
            exit 1
        fi
        log "deps: project venv lacks pyinstaller; installing it"
        [ -x "$ROOT/.venv/bin/python" ] || /usr/bin/python3 -m venv "$ROOT/.venv"
        "$ROOT/.venv/bin/pip" install -q -e "$ROOT[freeze]" >&2
    fi
}
