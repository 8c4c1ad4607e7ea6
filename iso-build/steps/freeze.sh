# Step: freeze the app with PyInstaller (onedir) into build/freeze/dist/lifeboat, then
# prove the bundle runs here before it goes into the image. Sets BUNDLE.

freeze_app() {
    local dist="$BUILD/freeze/dist" work="$BUILD/freeze/work"
    BUNDLE="$dist/lifeboat"
    log "freeze: pyinstaller (python $("$ROOT/.venv/bin/python" -c 'import sys; print(sys.version.split()[0])'))"
    # unittest is excluded in the spec but some libraries import it at module level; a
    # missing import shows up in the self-test below, not at boot.
    (cd "$ROOT" && .venv/bin/pyinstaller --noconfirm --log-level WARN \
        --distpath "$dist" --workpath "$work" iso-build/lifeboat.spec) >&2
    log "freeze: self-test of the bundle"
    "$BUNDLE/lifeboat" --version >&2
    if [ "${LIFEBOAT_ISO_SELFTEST:-1}" = 1 ]; then
        "$BUNDLE/lifeboat" disks --json >/dev/null
        "$BUNDLE/lifeboat" live --cmdline "quiet" # parses, finds nothing to do
        # What loads its libraries only when used: parity (pyeclib, ISA-L by dlopen), zstd,
        # and the encrypted repository's Argon2id and AES-GCM.
        local t
        t=$(mktemp -d)
        truncate -s 8M "$t/disk.img" && mkfs.ext4 -q "$t/disk.img"
        "$BUNDLE/lifeboat" repo init "$t/plain" >/dev/null
        "$BUNDLE/lifeboat" backup "$t/disk.img" --repo "$t/plain" >/dev/null
        ls "$t"/plain/packs/*/*.pack.par >/dev/null
        echo "a passphrase for the self-test" > "$t/pass"
        "$BUNDLE/lifeboat" repo init "$t/sealed" --encrypt --passphrase-file "$t/pass" \
            --kdf-memory 8 --kdf-iterations 1 --kdf-parallelism 1 >/dev/null
        "$BUNDLE/lifeboat" backup "$t/disk.img" --repo "$t/sealed" --passphrase-file "$t/pass" >/dev/null
        "$BUNDLE/lifeboat" verify --repo "$t/sealed" --passphrase-file "$t/pass" >/dev/null
        rm -rf "$t"
    fi
    log "freeze: bundle $(du -sm "$BUNDLE" | cut -f1) MiB"
}
