"""torch.distributed.checkpoint (DCP) read without running code from the checkpoint's files.
DCP keeps its `.metadata` as a pickle and unpickles it on load (torch's
distributed/checkpoint/filesystem.py, FileSystemReader.read_metadata), and its default planner
loads every non-tensor item with `torch.load(..., weights_only=False)` (default_planner.py,
DefaultLoadPlanner.load_bytes). Workdirs are often group-writable scratch, so a planted
`.metadata` or shard would run its code on resume. Here the metadata goes through an unpickler
that builds only DCP's own metadata classes, torch sizes, dtypes and layouts, and paths, and
byte items are read `weights_only`. The checkpoint's manifest is checked before either runs
(harness.training.checkpoint); this is the second wall, for a manifest forged along with the
files."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

METADATA = ".metadata"

# what a DCP metadata pickle names (found by listing a real one's globals): DCP's metadata
# dataclasses and enum, the filesystem's per-item storage info, and plain values
_ALLOWED = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "ChunkStorageMetadata", "BytesStorageMetadata", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}


class UnsafeCheckpoint(Exception):
    """A checkpoint file that asks to build something other than checkpoint data."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpoint(f"{METADATA} asks for {module}.{name}, which no DCP metadata "
                               "holds: refused, nothing of it was run")


def read_metadata(folder: Path) -> Metadata:
    """`folder`'s DCP metadata, built only from the allowed classes (UnsafeCheckpoint
    otherwise)."""
    with open(Path(folder) / METADATA, "rb") as f:
        metadata = _MetadataUnpickler(f).load()
    if not isinstance(metadata, Metadata):
        raise UnsafeCheckpoint(f"{Path(folder) / METADATA} holds a {type(metadata).__name__}, "
                               "not DCP metadata")
    return metadata


class SafeReader(FileSystemReader):
    """DCP's file reader with the metadata read by read_metadata (tensors it already reads
    weights_only)."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        if kwargs.get("rank") is not None:   # a per-rank metadata file: we never write them
            raise UnsafeCheckpoint("per-rank DCP metadata is not read")
        metadata = read_metadata(Path(self.path))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, its non-tensor items read `weights_only` (numbers,
    strings, tuples: an optimizer's param groups)."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        # read weights_only here; the default planner then places it (its own torch.load
        # reads back only what this wrote from the safely read value)
        item = torch.load(value, weights_only=True)
        again = io.BytesIO()
        torch.save(item, again)
        again.seek(0)
        super().load_bytes(read_item, again)
