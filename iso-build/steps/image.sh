# Step: the hybrid ISO. One file that boots as a CD and as a dd'ed USB stick, on BIOS
# (GRUB i386-pc El Torito + hybrid MBR) and UEFI (an appended EFI partition holding
# Debian's Microsoft-signed shim, Debian-signed GRUB; the kernel is Debian-signed too,
# so Secure Boot stays on).

GRUB_BIOS_MODULES="biosdisk iso9660 part_msdos part_gpt search search_fs_file configfile
    normal linux echo test serial terminal halt reboot sleep ls cat"

image_subst() {
    sed -e "s/@ID@/$BUILD_ID/g" -e "s/@VERSION@/$VERSION/g" "$1"
}

image_build() {
    local stage="$WORK/stage" efi="$WORK/efi.img"
    VERSION=$("$BUNDLE/lifeboat" --version 2>/dev/null | awk '{print $NF}')
    rm -rf "$stage"
    mkdir -p "$stage"/{live,.disk,boot/grub}
    cp "$KERNEL" "$stage/live/vmlinuz"
    cp "$INITRD" "$stage/live/initrd.img"
    mv "$SQUASHFS" "$stage/live/root.squashfs"
    echo "$BUILD_ID" > "$stage/.disk/lifeboat-id"
    : > "$stage/.disk/lifeboat-id-$BUILD_ID"
    echo "Lifeboat $VERSION live recovery $(date -u +%Y-%m-%d)" > "$stage/.disk/info"
    image_subst "$ISO_SRC/grub/grub.cfg" > "$stage/boot/grub/grub.cfg"

    # BIOS: a GRUB core image for El Torito with everything built in (no module folder).
    image_subst "$ISO_SRC/grub/bios-embed.cfg" > "$WORK/bios-embed.cfg"
    # shellcheck disable=SC2086
    grub-mkimage -O i386-pc-eltorito -p /boot/grub -c "$WORK/bios-embed.cfg" \
        -o "$stage/boot/grub/bios.img" $GRUB_BIOS_MODULES

    # UEFI: the EFI System partition image, in the layout shim expects (grubx64.efi next
    # to BOOTX64.EFI) plus the config Debian's GRUB looks for.
    image_subst "$ISO_SRC/grub/efi-debian.cfg" > "$WORK/efi-debian.cfg"
    rm -f "$efi"
    mkfs.vfat -C -n LIFEBOATEFI "$efi" 8192 >/dev/null
    mmd -i "$efi" ::/EFI ::/EFI/BOOT ::/EFI/debian
    mcopy -i "$efi" /usr/lib/shim/shimx64.efi.signed ::/EFI/BOOT/BOOTX64.EFI
    mcopy -i "$efi" /usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed ::/EFI/BOOT/grubx64.efi
    mcopy -i "$efi" /usr/lib/shim/mmx64.efi.signed ::/EFI/BOOT/mmx64.efi
    mcopy -i "$efi" "$WORK/efi-debian.cfg" ::/EFI/debian/grub.cfg

    mkdir -p "$(dirname "$OUT")"
    rm -f "$OUT.tmp"
    xorriso -as mkisofs -quiet -r -J -joliet-long -V LIFEBOAT -o "$OUT.tmp" \
        --grub2-mbr /usr/lib/grub/i386-pc/boot_hybrid.img \
        -partition_offset 16 \
        -appended_part_as_gpt \
        -append_partition 2 C12A7328-F81F-11D2-BA4B-00A0C93EC93B "$efi" \
        -iso_mbr_part_type EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 \
        -c boot/boot.cat \
        -b boot/grub/bios.img -no-emul-boot -boot-load-size 4 -boot-info-table --grub2-boot-info \
        -eltorito-alt-boot \
        -e '--interval:appended_partition_2:::' -no-emul-boot \
        "$stage" >&2
    # Kernel and initrd stay beside the ISO: tests boot them directly with a custom
    # command line (unattended restore) while the ISO is the medium.
    # Replaced by rename, so a VM still running from the previous build keeps its files.
    cp "$KERNEL" "$BUILD/lifeboat-vmlinuz.tmp"
    cp "$INITRD" "$BUILD/lifeboat-initrd.img.tmp"
    mv "$OUT.tmp" "$OUT"
    mv "$BUILD/lifeboat-vmlinuz.tmp" "$BUILD/lifeboat-vmlinuz"
    mv "$BUILD/lifeboat-initrd.img.tmp" "$BUILD/lifeboat-initrd.img"
}
