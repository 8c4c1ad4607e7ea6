# Step: a minimal Debian bookworm userland made by mmdebstrap, cached under build/cache.
# Sourced by scripts/build-iso; sets ROOTFS_CACHE to a directory holding the tree.

# Docs, manuals, translations and the kernel modules a recovery system never loads are
# excluded at unpack time: cheaper than writing ~400 MB and deleting it.
# Fills the array EXCLUDES; globs here are dpkg's patterns, never the shell's.
rootfs_excludes() {
    local -; set -f
    local p
    EXCLUDES=()
    for p in /usr/share/doc/ /usr/share/man/ /usr/share/info/ /usr/share/locale/ \
             /usr/share/lintian/ /usr/share/bug/ /usr/share/doc-base/; do
        EXCLUDES+=("--dpkgopt=path-exclude=$p*")
    done
    EXCLUDES+=("--dpkgopt=path-include=/usr/share/doc/*/copyright")
    # Module trees: sound, graphics, cameras/TV, wireless, InfiniBand, staging and
    # sensors. Disks, USB, input, Ethernet and filesystems stay.
    for p in sound drivers/gpu drivers/media drivers/infiniband drivers/net/wireless \
             drivers/staging drivers/iio drivers/isdn drivers/bluetooth net/bluetooth \
             net/wireless net/mac80211 drivers/net/can net/can drivers/comedi \
             drivers/input/touchscreen drivers/input/joystick drivers/hwmon drivers/mtd \
             drivers/net/ethernet/mellanox drivers/net/ethernet/qlogic drivers/net/ethernet/chelsio \
             drivers/scsi/qla2xxx drivers/scsi/lpfc drivers/scsi/bfa drivers/target \
             fs/ocfs2 fs/gfs2 fs/xfs fs/btrfs fs/nilfs2 fs/ceph drivers/md/bcache \
             drivers/net/usb/lan78xx.ko drivers/platform/chrome drivers/usb/gadget \
             drivers/nfc net/nfc drivers/w1 drivers/char/tpm/st33zp24 drivers/pcmcia; do
        EXCLUDES+=("--dpkgopt=path-exclude=/lib/modules/*/kernel/$p*")
    done
}

rootfs_build() {
    local key dir
    # The cache key covers everything that shapes the tree.
    key=$(cat "$ISO_SRC/packages.txt" "$ISO_SRC/steps/rootfs.sh" | sha256sum | cut -c1-16)
    dir="$CACHE/rootfs-$key"
    ROOTFS_CACHE="$dir"
    if [ -f "$dir/.complete" ]; then
        log "rootfs: cached ($dir)"
        return
    fi
    rm -rf "$dir" "$dir.tmp"
    local pkgs
    pkgs=$(grep -v '^\s*#' "$ISO_SRC/packages.txt" | xargs | tr ' ' ,)
    log "rootfs: mmdebstrap bookworm ($pkgs)"
    rootfs_excludes
    # merged-usr via the hook: the usrmerge package would pull in perl.
    mmdebstrap --variant=essential --mode=root \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --aptopt='APT::Install-Recommends "false"' \
        --include="$pkgs" \
        "${EXCLUDES[@]}" \
        --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/boot/initrd* "$1"/var/log/*' \
        --customize-hook='for k in "$1"/lib/modules/*; do chroot "$1" depmod -a "${k##*/}"; done' \
        bookworm "$dir.tmp" \
        "deb $DEBIAN_MIRROR bookworm main" \
        "deb $DEBIAN_MIRROR bookworm-updates main" \
        "deb $DEBIAN_SECURITY bookworm-security main" >&2
    touch "$dir.tmp/.complete"
    mv "$dir.tmp" "$dir"
    # Older trees are dead weight once the recipe changes.
    find "$CACHE" -maxdepth 1 -name 'rootfs-*' ! -name "rootfs-$key" -exec rm -rf {} +
}
