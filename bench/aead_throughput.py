#!/usr/bin/env python3
"""AEAD throughput on 1 MiB buffers, the two libraries the live system can carry:
cryptography (OpenSSL) and pycryptodome, AES-256-GCM and ChaCha20-Poly1305, on one thread
and on two (whether a library lets threads run side by side). Also times the Argon2id
defaults of recovery/repo/keys.py. Run: .venv/bin/python bench/aead_throughput.py"""

from __future__ import annotations

import os
import threading
import time

from argon2.low_level import Type, hash_secret_raw
from Crypto.Cipher import AES, ChaCha20_Poly1305
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

MiB = 1 << 20
BUF = os.urandom(MiB)
KEY = os.urandom(32)
AAD = os.urandom(33)


def rate(seal, seconds: float = 1.5, threads: int = 1) -> float:
    """MiB/s sealing BUF over and over for about `seconds` on `threads` threads."""
    seal(BUF)
    counts = [0] * threads

    def work(i: int) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            seal(BUF)
            counts[i] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def pycryptodome_gcm(b):
    c = AES.new(KEY, AES.MODE_GCM, nonce=os.urandom(12))
    c.update(AAD)
    return c.encrypt_and_digest(b)


def pycryptodome_chacha(b):
    c = ChaCha20_Poly1305.new(key=KEY, nonce=os.urandom(12))
    c.update(AAD)
    return c.encrypt_and_digest(b)


def main() -> None:
    gcm, chacha = AESGCM(KEY), ChaCha20Poly1305(KEY)
    cases = [
        ("cryptography AES-256-GCM", lambda b: gcm.encrypt(os.urandom(12), b, AAD)),
        ("cryptography ChaCha20-Poly1305", lambda b: chacha.encrypt(os.urandom(12), b, AAD)),
        ("pycryptodome AES-256-GCM", pycryptodome_gcm),
        ("pycryptodome ChaCha20-Poly1305", pycryptodome_chacha),
    ]
    print(f"cores: {os.cpu_count()}, load: {open('/proc/loadavg').read().split()[0]}")
    print("| library, cipher | 1 thread MiB/s | 2 threads MiB/s |")
    print("| --- | ---: | ---: |")
    for name, seal in cases:
        print(f"| {name} | {rate(seal):.0f} | {rate(seal, threads=2):.0f} |")
    from recovery.repo.keys import DEFAULT_ITERATIONS, DEFAULT_MEMORY_KIB, DEFAULT_PARALLELISM

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        hash_secret_raw(b"a passphrase", os.urandom(16), time_cost=DEFAULT_ITERATIONS, memory_cost=DEFAULT_MEMORY_KIB,
                        parallelism=DEFAULT_PARALLELISM, hash_len=32, type=Type.ID)
        times.append(time.perf_counter() - t0)
    print(f"\nArgon2id {DEFAULT_MEMORY_KIB // 1024} MiB, {DEFAULT_ITERATIONS} passes, {DEFAULT_PARALLELISM} lanes: "
          + ", ".join(f"{t:.2f} s" for t in times))


if __name__ == "__main__":
    main()
