"""Where a data set's files are: a folder, a .tar.gz/.tgz/.tar or .zip archive (data at the top or
one folder down, as GroupLens ships it), or a lone ratings file; read through one interface."""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol


class Files(Protocol):
    """Read access to the files of a folder or an archive, by '/'-separated relative name."""

    def names(self) -> list[str]: ...

    def size(self, name: str) -> int:
        """Uncompressed bytes of a file."""
        ...

    def open(self, name: str) -> BinaryIO: ...


class _FolderFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        # GroupLens data sits at the top or one folder down; deeper is someone else's tree.
        found = [*self.root.glob("*"), *self.root.glob("*/*")]
        return [p.relative_to(self.root).as_posix() for p in found if p.is_file()]

    def size(self, name: str) -> int:
        return (self.root / name).stat().st_size

    def open(self, name: str) -> BinaryIO:
        return (self.root / name).open("rb")


class _TarFiles:
    def __init__(self, archive: tarfile.TarFile) -> None:
        self.archive = archive
        self.members = _by_clean_name(m.name for m in archive.getmembers() if m.isfile())

    def names(self) -> list[str]:
        return list(self.members)

    def size(self, name: str) -> int:
        return self.archive.getmember(self.members[name]).size

    def open(self, name: str) -> BinaryIO:
        stream = self.archive.extractfile(self.members[name])
        if stream is None:
            raise ValueError(f"{name} is not a regular file in the archive")
        return stream


class _ZipFiles:
    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.members = _by_clean_name(i.filename for i in archive.infolist() if not i.is_dir())

    def names(self) -> list[str]:
        return list(self.members)

    def size(self, name: str) -> int:
        return self.archive.getinfo(self.members[name]).file_size

    def open(self, name: str) -> BinaryIO:
        return self.archive.open(self.members[name])


def _by_clean_name(names: Iterable[str]) -> dict[str, str]:
    """Archive member names keyed by their normal form ("./ml-100k/u.data" -> "ml-100k/u.data")."""
    return {PurePosixPath(name).as_posix(): name for name in names}


_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_ARCHIVE_SUFFIXES = (*_TAR_SUFFIXES, ".zip")


@contextmanager
def open_source(source: Path, ratings_files: Sequence[str]) -> Iterator[tuple[Files, str]]:
    """The source's files and the name of its ratings file among them."""
    if source.is_dir():
        files: Files = _FolderFiles(source)
        yield files, _find_ratings_file(files.names(), source, ratings_files)
    elif source.name.endswith(_TAR_SUFFIXES):
        with tarfile.open(source, "r:*") as archive:
            files = _TarFiles(archive)
            yield files, _find_ratings_file(files.names(), source, ratings_files)
    elif source.name.endswith(".zip"):
        with zipfile.ZipFile(source) as archive:
            files = _ZipFiles(archive)
            yield files, _find_ratings_file(files.names(), source, ratings_files)
    else:
        yield _FolderFiles(source.parent), source.name


def _find_ratings_file(names: list[str], source: Path, known: Sequence[str]) -> str:
    """The shallowest of the `known` ratings files, the first of `known` when several are there."""
    known = list(known)
    candidates = [name for name in names if PurePosixPath(name).name in known]
    if not candidates:
        raise ValueError(f"{source} holds no MovieLens ratings file (one of {', '.join(known)})")
    return min(
        candidates,
        key=lambda name: (name.count("/"), known.index(PurePosixPath(name).name), name),
    )


def source_name(source: Path) -> str:
    for suffix in _ARCHIVE_SUFFIXES:
        if source.name.endswith(suffix):
            return source.name.removesuffix(suffix)
    return source.name
