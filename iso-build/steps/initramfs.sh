# Step: a tiny initramfs (static busybox, the storage modules, iso-build/initramfs/init).
# A big initramfs is slow to load from CD under firmware; this one is a few MB.
# Sets KERNEL, INITRD and BUILD_ID.

initramfs_build() {
    local dir="$WORK/initramfs" kver mod line
    rm -rf "$dir"
    mkdir -p "$dir"/{bin,dev,proc,sys,lib/modules}
    KERNEL=$(ls "$ROOTFS_CACHE"/boot/vmlinuz-* | sort -V | tail -1)
    kver=${KERNEL##*/vmlinuz-}
    # One id per build: the initramfs mounts only the medium carrying the same id, never
    # another Lifeboat (or other) disk that happens to be attached.
    BUILD_ID="lifeboat-$(date -u +%Y%m%d%H%M%S)-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "$BUILD_ID" > "$dir/lifeboat-id"
    cp /bin/busybox "$dir/bin/busybox"
    ln -s busybox "$dir/bin/sh"
    install -m 0755 "$ISO_SRC/initramfs/init" "$dir/init"
    # Resolve dependencies with the live tree's own modules.dep, in load order.
    : > "$dir/lib/modules/load-order"
    for mod in $(grep -v '^\s*#' "$ISO_SRC/initramfs/modules.txt"); do
        if ! modprobe -d "$ROOTFS_CACHE" -S "$kver" --show-depends "$mod" >/dev/null 2>&1; then
            log "initramfs: kernel $kver has no module $mod (built in or gone); skipped"
            continue
        fi
        modprobe -d "$ROOTFS_CACHE" -S "$kver" --show-depends "$mod" |
        while read -r kind path _; do
            [ "$kind" = insmod ] || continue
            line="/lib/modules/$kver/${path#*/lib/modules/$kver/}"
            grep -qxF "$line" "$dir/lib/modules/load-order" && continue
            mkdir -p "$dir$(dirname "$line")"
            cp "$path" "$dir$line"
            echo "$line" >> "$dir/lib/modules/load-order"
        done
    done
    INITRD="$WORK/initrd.img"
    # The squashfs's level (6, or 19 for --release): -19 costs ~10 CPU s for ~0.35 MB less.
    (cd "$dir" && find . | cpio -o -H newc --quiet | zstd -q "-$SQUASH_LEVEL" -T0 > "$INITRD")
    log "initramfs: $(wc -l < "$dir/lib/modules/load-order") modules, $(du -k "$INITRD" | cut -f1) KiB, kernel $kver"
}
