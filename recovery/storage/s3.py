"""A repository in an S3-compatible object store (AWS, MinIO, Ceph RGW, SeaweedFS, Garage…).

The client is minio-py: small (it and its dependencies add ~3.5 MB xz-compressed to the live
system, against ~17 MB for boto3/botocore, whose service models are most of it), maintained
by MinIO, thread-safe, with pooled keep-alive connections and parallel multipart uploads.

Keys are `<prefix>/<object name>`. Credentials come from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), else from the credentials file
(AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE or "default");
they are never printed, logged or written anywhere.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.credentials.providers import AWSConfigProvider, StaticProvider
from minio.error import InvalidResponseError, S3Error, ServerError

from recovery.errors import NoSpaceError, UsageError
from recovery.storage.base import BufferWriter, ObjectInfo, SetupError, Storage, StorageError, UnreachableError
from recovery.storage.location import Location, s3_endpoint
from recovery.storage.retry import Retrier

# An object up to SINGLE_PUT goes up in one PUT: a backup has several packs going up at once
# already, and a multipart upload of a pack cost six requests (create, four parts, complete)
# and the server's work of joining the parts. Larger objects (S3 takes at most 5 GiB in one
# PUT) go in parts, in parallel.
SINGLE_PUT_DEFAULT = 5 * 1024 ** 3
SINGLE_PUT = SINGLE_PUT_DEFAULT
MIN_PART = 5 * 1024 * 1024         # S3's smallest part size, which minio also asks of a single PUT
PART_SIZE = 16 * 1024 * 1024       # multipart above SINGLE_PUT: parts of this size, in parallel
PARALLEL_PARTS = 4
READ_BACK_PIECE = 1024 * 1024      # the read-back hashes a streamed GET in pieces of this size
_MISSING = ("NoSuchKey", "NoSuchObject", "ResourceNotFound")
_REFUSED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
            "ExpiredToken", "AllAccessDisabled", "AccountProblem")
_FULL = ("QuotaExceeded", "XMinioStorageFull", "StorageFull", "InsufficientStorage")
# The store takes no object this large: not full (smaller objects still go in), and not worth
# waiting for; AWS answers it with HTTP 400, MinIO, Ceph RGW and SeaweedFS alike.
_TOO_LARGE = ("EntityTooLarge",)


def credentials():
    key = os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_ACCESS_KEY")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or os.environ.get("AWS_SECRET_KEY")
    if key and secret:
        return StaticProvider(key, secret, os.environ.get("AWS_SESSION_TOKEN"))
    path = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    if os.path.isfile(path):
        provider = AWSConfigProvider(path)
        try:
            provider.retrieve()
        except ValueError:
            raise SetupError(f"the S3 credentials file {path} holds no key for profile "
                               f"{os.environ.get('AWS_PROFILE') or 'default'}") from None
        return provider
    raise SetupError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                       "write them in a credentials file (AWS_SHARED_CREDENTIALS_FILE)")


def _status(exc) -> int | None:
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, S3Error) and exc.response is not None:
        return exc.response.status
    if isinstance(exc, InvalidResponseError):
        return exc._code                              # noqa: SLF001 - no public accessor
    return None


def transient(exc) -> bool:
    """The server is away or overloaded: worth trying again. A store that answers it is full
    (MinIO's XMinioStorageFull comes as HTTP 507) is not: waiting makes no room."""
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return not _dns_failure(exc)
    if isinstance(exc, S3Error) and (exc.code in _FULL or exc.code in _REFUSED or exc.code in _TOO_LARGE):
        return False
    status = _status(exc)
    return status is not None and status != 507 and (status >= 500 or status in (408, 429))


def _chain(exc):
    """`exc` and what lies under it, up to six deep: urllib3 wraps a connection failure twice
    (in `reason`), the standard library in __cause__ or __context__."""
    seen = exc
    for _ in range(6):
        yield seen
        nxt = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen:
            return
        seen = nxt


def _dns_failure(exc) -> bool:
    return any(isinstance(seen, socket.gaierror) for seen in _chain(exc))


def _os_errno(exc) -> int | None:
    """The errno of the OSError under a connection failure."""
    return next((seen.errno for seen in _chain(exc) if isinstance(seen, OSError) and seen.errno), None)


class ViewReader:
    """A stream over bytes already in memory for minio, which reads an upload's body as bytes:
    each read is the one copy out of the buffer (io.BytesIO would first copy the whole pack in)."""

    def __init__(self, view: memoryview):
        self.view = view
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.view) if n is None or n < 0 else min(len(self.view), self.pos + n)
        out = bytes(self.view[self.pos : end])
        self.pos = end
        return out


class S3Storage(Storage):
    parallelism = 16
    remote = True
    shared_offsets = False

    def __init__(self, loc: Location):
        self.loc = loc
        endpoint = self.endpoint = s3_endpoint(loc)
        url = urlsplit(endpoint)
        self.bucket = loc.bucket
        self.prefix = f"{loc.path}/" if loc.path else ""
        # Retries are ours (Retrier): urllib3 only re-tries a connection once.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=60), maxsize=32, retries=urllib3.Retry(total=1, redirect=0),
            cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where())
        self.client = Minio(url.netloc, secure=url.scheme == "https", region=loc.options.get("region"),
                            credentials=credentials(), http_client=http)
        # Path-style addressing (endpoint/bucket/key) is what self-hosted stores serve, and what
        # minio-py uses for any endpoint but AWS's (and Alibaba's), which get virtual-host style
        # (bucket.endpoint/key) unless path style is asked for; a self-hosted store with
        # wildcard DNS (MinIO's MINIO_DOMAIN, Ceph RGW's rgw_dns_name) can ask for it.
        if loc.options.get("path_style"):
            self.client.disable_virtual_style_endpoint()
        elif loc.options.get("virtual_host"):
            self.client.enable_virtual_style_endpoint()
        self.retrier = Retrier()
        self.requests = 0                   # calls made (a list of >1000 keys counts once)
        self._count_lock = threading.Lock()
        self._check_bucket()

    # -- errors ------------------------------------------------------------------------
    def describe(self) -> str:
        return self.loc.display()

    def _fail(self, exc, waited: float) -> Exception:
        reason = self._reason(exc)
        if self.retrier.reached:
            head = f"the S3 server {self.endpoint} stopped answering ({reason}); gave up after {int(waited)} s"
            return UnreachableError(f"{head} — nothing already saved is lost; run it again when the server is "
                                    "back (LIFEBOAT_RETRY_SECONDS sets how long to wait)", head)
        return StorageError(f"cannot reach the S3 server {self.endpoint} ({reason}); check the address "
                            "(--s3-endpoint) and the network")

    def _reason(self, exc) -> str:
        if _dns_failure(exc):
            return "its name does not resolve"
        text = str(getattr(exc, "reason", None) or exc)
        if "Connection refused" in text:
            return "connection refused"
        if "timed out" in text.lower():
            return "timed out"
        code = _os_errno(exc)
        if code is not None:
            return os.strerror(code).lower()          # "network is unreachable", "no route to host"
        status = _status(exc)
        return f"HTTP {status}" if status else type(exc).__name__

    def _call(self, fn, name: str | None = None, size: int | None = None):
        def counted():
            with self._count_lock:
                self.requests += 1
            return fn()

        try:
            return self.retrier.call(counted, transient, self._fail)
        except S3Error as exc:
            raise self._s3_error(exc, name, size) from None
        except ServerError as exc:
            if _status(exc) == 507:          # Insufficient Storage, with no error document
                raise self._full("HTTP 507") from None
            raise self._fail(exc, 0) from None
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, InvalidResponseError, ServerError) as exc:
            raise self._fail(exc, 0) from None

    def _full(self, why: str) -> NoSpaceError:
        return NoSpaceError(f"the S3 bucket {self.bucket!r} is full ({why}); the repository is unchanged and "
                            "every earlier snapshot is intact — raise the quota or free space")

    def _s3_error(self, exc: S3Error, name: str | None, size: int | None = None) -> Exception:
        code = exc.code or ""
        if code in _MISSING or (code != "NoSuchBucket" and _status(exc) == 404 and name is not None):
            return FileNotFoundError(2, "no such object", self.where(name or ""))
        if code == "NoSuchBucket":
            return StorageError(f"the bucket {self.bucket!r} does not exist at {self.endpoint}; "
                                "create it first, or check the name")
        if code in _TOO_LARGE:
            return self._too_large(code, size)
        if code in _FULL:                 # before the refusals: Ceph says QuotaExceeded with HTTP 403
            return self._full(code)
        if code in _REFUSED or _status(exc) == 403:
            return StorageError(f"the S3 server {self.endpoint} refused the credentials ({code or 'HTTP 403'}): "
                                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and that this key may use "
                                f"the bucket {self.bucket!r}")
        if _status(exc) == 507:
            return self._full(code or "HTTP 507")
        return StorageError(f"the S3 server {self.endpoint} refused a request ({code or _status(exc)}: "
                            f"{exc.message or ''})".rstrip(": )") + ")")

    def _too_large(self, code: str, size: int | None) -> StorageError:
        from recovery.repo.repository import pack_size
        from recovery.units import human_size

        what = f"an object of {human_size(size)}" if size else "an object this large"
        try:
            now = f"now {pack_size()}"
        except UsageError:
            now = "now not a number"
        return StorageError(f"the S3 server {self.endpoint} refuses {what} ({code}): set LIFEBOAT_PACK_SIZE "
                            f"(bytes, {now}) below the store's largest object size, or raise that limit on the "
                            "store; every earlier snapshot is intact")

    def _check_bucket(self) -> None:
        if not self._call(lambda: self.client.bucket_exists(self.bucket)):
            raise StorageError(f"the bucket {self.bucket!r} does not exist at {self.endpoint}; "
                               "create it first, or check the name")

    # -- objects -----------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return self.prefix + name

    def list(self, prefix: str) -> list[ObjectInfo]:
        def run():
            out = []
            for obj in self.client.list_objects(self.bucket, prefix=self._key(prefix), recursive=True):
                if obj.is_dir:
                    continue
                mtime = obj.last_modified.timestamp() if obj.last_modified else 0.0
                out.append(ObjectInfo(obj.object_name[len(self.prefix):], obj.size or 0, mtime))
            return out

        return self._call(run)

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""

        def run():
            try:
                resp = self.client.get_object(self.bucket, self._key(name), offset=offset, length=length or 0)
            except S3Error as exc:
                if exc.code == "InvalidRange":
                    return b""                    # at or past the end of the object
                raise
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(run, name)

    def read_back(self, name: str, size: int | None = None) -> tuple[bytes, bytes]:
        """The read-back check's whole read in one GET streamed through the hashes: a ranged
        GET per piece would cost a request (a round trip, and the server's work) per 4 MiB."""
        import blake3

        from recovery.storage.base import SampleHasher, sample_spans

        def run():
            resp = self.client.get_object(self.bucket, self._key(name))
            try:
                total = int(resp.headers.get("content-length", 0))
                hasher = blake3.blake3()
                samples = SampleHasher(sample_spans(total if size is None else size))
                pos = 0
                for piece in resp.stream(READ_BACK_PIECE):
                    hasher.update(piece)
                    samples.feed(pos, piece)
                    pos += len(piece)
                if pos != total:
                    raise urllib3.exceptions.ProtocolError(f"the answer ended after {pos} of {total} bytes")
                return hasher.digest(), samples.digest()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(run, name)

    def size(self, name: str) -> int:
        return self._call(lambda: self.client.stat_object(self.bucket, self._key(name)).size, name)

    def write(self, name: str, data) -> None:
        view = memoryview(data)

        def run():
            if len(view) <= SINGLE_PUT:
                self.client.put_object(self.bucket, self._key(name), ViewReader(view), len(view),
                                       part_size=max(len(view), MIN_PART))
            else:
                self.client.put_object(self.bucket, self._key(name), ViewReader(view), len(view),
                                       part_size=PART_SIZE, num_parallel_uploads=PARALLEL_PARTS)

        self._call(run, name, len(view))

    def create(self) -> BufferWriter:
        return BufferWriter(self)

    def delete(self, name: str) -> None:
        self._call(lambda: self.client.remove_object(self.bucket, self._key(name)), name)

    def close(self) -> None:
        self.client._http.clear()                    # noqa: SLF001 - closes pooled connections
