"""Independent reader of the edge-mes Parquet archive (test-only; see docs/archive.md).

Reads every Parquet file under ROOT with pyarrow, takes date/site/resource/sensor from the
Hive-style path (percent-decoded), and prints per day: rows, sum of ts in microseconds, sum of
values, sites and resources. It also checks every manifest with its own code: each file's
SHA-256 and row count, each row group's RFC 6962 leaf hash from pyarrow's metadata, and the
Merkle root. Prints JSON: {"days": {...}, "manifests_checked": n, "errors": [...]}.
"""
import hashlib
import json
import os
import sys
from urllib.parse import unquote

import pyarrow.compute as pc
import pyarrow.parquet as pq


def leaf(data):
    return hashlib.sha256(b"\x00" + data).digest()


def root(leaves):
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + root(leaves[:k]) + root(leaves[k:])).digest()


def row_group_ranges(path):
    md = pq.ParquetFile(path).metadata
    out = []
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        start, end = None, 0
        for j in range(rg.num_columns):
            c = rg.column(j)
            s = c.dictionary_page_offset if c.has_dictionary_page and c.dictionary_page_offset else c.data_page_offset
            start = s if start is None else min(start, s)
            end = max(end, s + c.total_compressed_size)
        out.append((start, end - start, rg.num_rows))
    return out


def check_manifest(root_dir, path, errors):
    with open(path, "rb") as f:
        m = json.load(f)
    leaves = []
    for entry in m["files"]:
        fp = os.path.join(root_dir, entry["path"])
        with open(fp, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            errors.append(f"{entry['path']}: sha256 differs")
        if pq.ParquetFile(fp).metadata.num_rows != entry["rows"]:
            errors.append(f"{entry['path']}: rows differ")
        for (off, length, rows), g in zip(row_group_ranges(fp), entry["row_groups"]):
            h = leaf(data[off:off + length])
            if (off, length, rows, h.hex()) != (g["offset"], g["length"], g["rows"], g["hash"]):
                errors.append(f"{entry['path']}: row group at {off} differs")
            leaves.append(h)
    if root(leaves).hex() != m["merkle_root"]:
        errors.append(f"{path}: merkle root differs")
    return m


def main():
    root_dir = sys.argv[1]
    days, errors, checked = {}, [], 0
    for dirpath, dirnames, filenames in os.walk(root_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
        for name in filenames:
            if not name.endswith(".parquet"):
                errors.append(f"unexpected file {os.path.join(dirpath, name)}")
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), root_dir)
            parts = dict(seg.split("=", 1) for seg in rel.split(os.sep)[:-1])
            table = pq.read_table(os.path.join(dirpath, name))
            d = days.setdefault(unquote(parts["date"]), {"rows": 0, "ts": 0, "value": 0.0,
                                                         "sites": set(), "resources": set()})
            d["rows"] += table.num_rows
            ts = table.column("ts").cast("int64")
            d["ts"] += sum(v.as_py() for v in ts)
            d["value"] += pc.sum(table.column("value")).as_py() or 0.0
            d["sites"].add(unquote(parts["site"]))
            d["resources"].add(unquote(parts["resource"]))
            res = set(table.column("resource_id").to_pylist())
            if res != {unquote(parts["resource"])}:
                errors.append(f"{rel}: resource_id column {res} differs from its path")
    mdir = os.path.join(root_dir, "_manifests")
    for dirpath, _, filenames in os.walk(mdir):
        for name in sorted(filenames):
            check_manifest(root_dir, os.path.join(dirpath, name), errors)
            checked += 1
    out = {
        "days": {k: {"rows": v["rows"], "ts_micros": str(v["ts"]), "value": v["value"],
                     "sites": sorted(v["sites"]), "resources": sorted(v["resources"])}
                 for k, v in days.items()},
        "manifests_checked": checked,
        "errors": errors,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
