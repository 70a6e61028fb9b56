"""Where a database-backed server keeps file contents: ``--files DIR`` (a folder, e.g. a shared mount) or
``--files s3://bucket/prefix`` (any S3-compatible store: AWS S3, MinIO, Ceph, R2, ...; needs the ``[s3]`` extra).

Keys are ``<experiment prefix>/files/<dir>/<id>/<filename>``: the layout of a `.dash` folder's files. For S3 the
client reads the usual AWS settings (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` for a store other than AWS).
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024


def object_key(prefix: str, entry: dict[str, Any]) -> str:
    segs = [p for p in str(entry["path"]).split("/") if p]
    return "/".join([prefix, "files", *segs, str(entry["id"]), str(entry["filename"])])


class Objects(ABC):
    @abstractmethod
    def put(self, key: str, staged: Path) -> None:
        """Store the staged file under ``key`` (complete or not at all)."""

    @abstractmethod
    def get(self, key: str) -> Path | Iterator[bytes] | None:
        """A local path or a chunk iterator of the content; None when missing."""

    def describe(self) -> str:
        return repr(self)


class DirObjects(Objects):
    def __init__(self, root: str | Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync

    def put(self, key: str, staged: Path) -> None:
        target = self.root.joinpath(*key.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        shutil.copyfile(staged, tmp)
        if self.fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)

    def get(self, key: str) -> Path | None:
        p = self.root.joinpath(*key.split("/"))
        return p if p.is_file() else None

    def describe(self) -> str:
        return str(self.root.resolve())


class S3Objects(Objects):
    def __init__(self, bucket: str, prefix: str) -> None:
        try:
            import boto3
        except ImportError as e:
            raise RuntimeError("--files s3://... needs the s3 extra: pip install './packages/core[s3]'") from e
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client("s3")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, staged: Path) -> None:
        self.client.upload_file(str(staged), self.bucket, self._key(key))  # multipart for large files

    def get(self, key: str) -> Iterator[bytes] | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None
        chunks: Iterator[bytes] = iter(obj["Body"].iter_chunks(CHUNK))
        return chunks

    def check(self) -> None:
        """Fail at start, with the store's own message, when the bucket cannot be reached."""
        self.client.head_bucket(Bucket=self.bucket)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def open_objects(spec: str, fsync: bool = True) -> Objects:
    """``DIR`` or ``s3://bucket[/prefix]``."""
    if spec.startswith("s3://"):
        bucket, _, prefix = spec[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"--files {spec!r}: no bucket; write s3://bucket/prefix")
        s3 = S3Objects(bucket, prefix)
        s3.check()
        return s3
    if "://" in spec:
        raise ValueError(f"--files {spec!r}: a folder or s3://bucket/prefix")
    return DirObjects(spec, fsync=fsync)
