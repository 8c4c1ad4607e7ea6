"""Session-wide network servers for the repository tests (started on first use, once)."""

from tests.netservers import password_sshd, seaweedfs, sshd, unprivileged_sshd  # noqa: F401 - pytest finds fixtures here
