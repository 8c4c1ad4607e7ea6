# Step: the live root = cached Debian tree + our init files + the frozen app, packed as
# a zstd squashfs. Sets SQUASHFS.

squashfs_build() {
    local root="$WORK/root" a
    rm -rf "$root"
    mkdir -p "$WORK"
    cp -a "$ROOTFS_CACHE" "$root"
    rm -f "$root/.complete"

    cp -a "$ISO_SRC/rootfs/." "$root/"
    mkdir -p "$root/opt"
    cp -a "$BUNDLE" "$root/opt/lifeboat"
    ln -sf /opt/lifeboat/lifeboat "$root/usr/local/bin/lifeboat"

    # busybox is init and power control; other applets only fill gaps (never replace
    # the real util-linux and e2fsprogs tools).
    ln -sf /bin/busybox "$root/sbin/init"
    for a in poweroff reboot halt; do ln -sf /bin/busybox "$root/sbin/$a"; done
    for a in udhcpc ping wget vi free ps top uptime pgrep pkill watch; do
        [ -e "$root/usr/bin/$a" ] || [ -e "$root/usr/sbin/$a" ] || ln -s /bin/busybox "$root/usr/bin/$a"
    done
    mkdir -p "$root/usr/share/udhcpc"
    ln -sf /etc/udhcpc/default.script "$root/usr/share/udhcpc/default.script" 2>/dev/null || true

    echo lifeboat > "$root/etc/hostname"
    : > "$root/etc/fstab"
    # root logs in without a password: the live system has no other users and no network
    # service; whoever holds the stick holds the machine.
    sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"
    printf 'export LANG=C.UTF-8 LIFEBOAT_LIVE=1\nPS1="lifeboat \\w # "\n' > "$root/root/.bashrc"

    # Not needed at run time: the kernel is on the ISO itself, perl only serves dpkg
    # maintainer scripts, and nothing installs packages here.
    rm -rf "$root"/boot/* "$root"/usr/lib/x86_64-linux-gnu/perl-base "$root"/usr/bin/perl* \
           "$root"/var/cache/debconf/* "$root"/usr/share/perl5 "$root"/var/lib/dpkg/info/*.md5sums

    SQUASHFS="$WORK/root.squashfs"
    rm -f "$SQUASHFS"
    log "squashfs: zstd level $SQUASH_LEVEL of $(du -sm "$root" | cut -f1) MiB"
    mksquashfs "$root" "$SQUASHFS" -comp zstd -Xcompression-level "$SQUASH_LEVEL" -b 1M \
        -noappend -no-progress -quiet >&2
    log "squashfs: $(du -m "$SQUASHFS" | cut -f1) MiB"
}
