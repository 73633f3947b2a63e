"""From a list of image URLs to a competition folder the kit reads unchanged (src/download.py).

Input: a CSV with a `url` column and a label column (`label`, `labels`, `tags` or `target`: a class,
separated tags or a number), optional `id` and `split` (train/test); every other column is kept in
train.csv. Or a folder of text files, one per class (`<class>.txt`, one URL a line).

Output (`--out`): train.csv + train/<id>.<ext> (or train/<label>/<id>.<ext> with --layout folders),
test/<id>.<ext> + sample_submission.csv for rows marked test, and downloads.csv: every row's outcome,
HTTP status, bytes, seconds and tries.

Every body is decoded with the kit's own decoder (data.images) before it is kept: HTML error pages,
truncated and zero-byte files and images over the decoded-pixel limit never reach train/. Files are
stored as received (the format's own extension), unless --max-side shrinks a larger image. Exact
duplicates (same bytes or same decoded pixels) are kept once, the first in the list's order.

Resumable: each file is written to .download/tmp/ and renamed into place, then one line is appended
to the journal (.download/journal*.jsonl). A rerun skips every id the journal has (and adopts a file
already in place whose line was lost), fetches failures again only with --retry-failed, and rewrites
the tables from the journal. `--shard K/N` downloads one share into the same folder (its own
journal); `--merge` writes the tables from all the shares' journals.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from foldkit.data.fetch import Client, Fetched, Limits, Stopped
from foldkit.data.images import ImageError, InputError, TooManyPixelsError, check_image_file, decode_image, \
    image_kind
from foldkit.io import atomic_write_text

LABEL_COLUMNS = ("label", "labels", "tags", "target")
SHARD_ENV = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif", "webp": ".webp",
              "pnm": ".pnm"}
SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")
STATE = ".download"
REPORT_COLUMNS = ["id", "url", "split", "outcome", "status", "bytes", "seconds", "tries", "detail", "file"]
OUTCOME_WORDS = {"ok": "ok", "duplicate": "duplicates", "http": "HTTP errors", "timeout": "timeouts",
                 "network": "network errors", "not_image": "not an image", "too_large": "too large",
                 "too_many_pixels": "over the pixel limit", "refused": "refused", "redirects": "redirect loops",
                 "not_tried": "not tried yet"}
FAILED = frozenset(OUTCOME_WORDS) - {"ok", "duplicate", "not_tried"}


class DownloadError(InputError):
    """A URL list, output folder or download flag that cannot be used as given."""


@dataclass
class Settings:
    source: Path
    out: Path
    layout: str = "csv"                   # csv: train.csv + train/<id>.<ext>; folders: train/<label>/<id>.<ext>
    workers: int = 16                     # downloads in flight
    limits: Limits = field(default_factory=Limits)
    max_side: int = 0                     # shrink images whose longer side is larger (0: as received)
    max_time: float = 0.0                 # seconds for the whole run (0: no limit); the rest waits for a rerun
    retry_failed: bool = False
    resume: bool = False
    shard: tuple[int, int] | None = None  # (k, n): this run's share of the rows
    merge: bool = False
    progress: bool = True


# --- the URL list ----------------------------------------------------------------------------------

def _url_id(url: str) -> str:
    return hashlib.sha1(url.encode()).hexdigest()[:16]


def _from_folder(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DownloadError(f"{folder}: no <class>.txt files (one URL a line) in the folder")
    rows = []
    for f in files:
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DownloadError(f"{f}: cannot read the URL list ({e}); it must be UTF-8 text, one URL a line") \
                from None
        rows += [{"url": u.strip(), "label": f.stem} for u in lines if u.strip() and not u.strip().startswith("#")]
    return pd.DataFrame(rows, columns=["url", "label"])


def read_urls(source: str | Path) -> tuple[pd.DataFrame, str]:
    """The URL list as a table (id, url, split, the label column, other columns, `row`: the data row)
    and the label column's name. Refuses a missing url column, unsafe or repeated ids, unknown splits."""
    source = Path(source)
    if source.is_dir():
        df = _from_folder(source)
    else:
        try:
            df = pd.read_csv(source, dtype=str, keep_default_na=False)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise DownloadError(f"{source}: cannot read the URL list ({type(e).__name__}: {e}); give a CSV with "
                                "a url column, or a folder of <class>.txt files") from None
    if "url" not in df.columns:
        raise DownloadError(f"{source}: no `url` column (columns: {', '.join(map(str, df.columns)) or 'none'}); "
                            "name the column of image URLs `url`")
    if not len(df):
        raise DownloadError(f"{source}: no URLs in the list")
    df = df.copy()
    df["row"] = range(1, len(df) + 1)
    df["url"] = df["url"].str.strip()
    df["split"] = df["split"].str.strip().str.lower().replace("", "train") if "split" in df else "train"
    bad = df[~df["split"].isin(["train", "test"])]
    if len(bad):
        raise DownloadError(f"{source}: data row {bad['row'].iloc[0]}: split {bad['split'].iloc[0]!r}; "
                            "use train or test (empty = train)")
    label = next((c for c in LABEL_COLUMNS if c in df.columns), "")
    if not label and (df["split"] == "train").any():
        raise DownloadError(f"{source}: no label column for the training rows; add one named "
                            f"{' or '.join(LABEL_COLUMNS)}")
    if "id" in df.columns:
        df["id"] = df["id"].str.strip()
        for r, i in zip(df["row"], df["id"]):
            if not SAFE_ID.match(i):
                raise DownloadError(f"{source}: data row {r}: id {i!r} is not a file name (letters, digits, _ . -; "
                                    "not starting with . or -); fix it or drop the id column (ids from the URL)")
        repeated = df[df["id"].duplicated(keep=False)]
        if len(repeated):
            raise DownloadError(f"{source}: id {repeated['id'].iloc[0]!r} is on data rows "
                                f"{', '.join(map(str, repeated['row'].head(5)))}; ids must be unique")
    else:
        first = ~df["url"].duplicated()      # a repeated URL gets its own id (reported as a duplicate)
        df.insert(0, "id", [_url_id(u if f else f"{u}#{r}") for u, f, r in zip(df["url"], first, df["row"])])
    front = ["id", "url", "split"] + ([label] if label else [])
    return df[front + [c for c in df.columns if c not in front]], label


def shard_spec(text: str) -> tuple[int, int]:
    """--shard K/N (0 <= K < N), or env / env/N: K from a SLURM array ($SLURM_ARRAY_TASK_ID, N from
    $SLURM_ARRAY_TASK_COUNT) or a Kubernetes Indexed Job ($JOB_COMPLETION_INDEX, N given)."""
    k, _, n = text.strip().lower().partition("/")
    if k == "env":
        found = next((v for v in SHARD_ENV if os.environ.get(v, "").strip()), None)
        if found is None:
            raise DownloadError(f"--shard env: none of {', '.join(SHARD_ENV)} is set; run it as a SLURM array "
                                "task or a Kubernetes Indexed Job, or give --shard K/N")
        k = os.environ[found].strip()
        if found == "SLURM_ARRAY_TASK_ID" and k.isdigit():      # an array may start at 1 (--array=1-4)
            k = str(int(k) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0") or 0))
        n = n or os.environ.get("SLURM_ARRAY_TASK_COUNT", "")
        if not n:
            raise DownloadError(f"--shard env: the number of shares is unknown ({found} is set); give --shard env/N")
        text = f"{text} ({k}/{n})"
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise DownloadError(f"--shard {text}: give K/N with 0 <= K < N (e.g. 0/4), env or env/N")
    return int(k), int(n)


# --- the output folder and the journal ---------------------------------------------------------------

def _plan_hash(df: pd.DataFrame, layout: str) -> str:
    return hashlib.sha256((layout + "\n" + df.drop(columns="row").to_csv(index=False)).encode()).hexdigest()


def _claim(out: Path, digest: str, resume: bool) -> None:
    """Refuse an --out holding another competition or another URL list's download, unless --resume."""
    state = out / STATE / "state.json"
    if state.is_file():
        try:
            same = json.loads(state.read_text()).get("plan") == digest
        except (OSError, ValueError):
            same = False
        if not same and not resume:
            raise DownloadError(f"{out}: holds the download of another URL list (or layout); choose another "
                                "--out, or pass --resume to add this list to it")
    elif out.is_dir() and any(p.name != STATE for p in out.iterdir()) and not resume:
        found = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise DownloadError(f"{out}: already holds files ({found}); choose an empty --out, or pass --resume to "
                            "download into it")
    atomic_write_text(state, json.dumps({"plan": digest}) + "\n")


def _journal_name(shard: tuple[int, int] | None) -> str:
    return f"journal-{shard[0]}-of-{shard[1]}.jsonl" if shard else "journal.jsonl"


def read_journals(out: Path) -> dict[str, dict]:
    """id -> its last record in every journal of the folder (a line cut by a kill is skipped)."""
    done: dict[str, dict] = {}
    for path in sorted((out / STATE).glob("journal*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "id" in rec:
                done[rec["id"]] = rec
    return done


def _target(out: Path, row: dict, label: str, layout: str) -> Path:
    if row["split"] == "test":
        return out / "test"
    return out / "train" / str(row[label]) if layout == "folders" else out / "train"


def _on_disk(folder: Path, ident: str) -> Path | None:
    for ext in EXTENSIONS.values():
        if (folder / (ident + ext)).is_file():
            return folder / (ident + ext)
    return None


# --- one URL -----------------------------------------------------------------------------------------

def _shrink_to(body: bytes, img, kind: str, max_side: int) -> tuple[bytes, str]:
    """The image re-encoded with its longer side at max_side (JPEG stays JPEG, the rest becomes PNG)."""
    import cv2  # lazy: OpenCV only when resizing

    h, w = img.shape[:2]
    f = max_side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    small = small if small.ndim == 2 or small.shape[2] == 1 else cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    ext = ".jpg" if kind == "jpeg" else ".png"
    ok, buf = cv2.imencode(ext, small, [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
    return buf.tobytes(), "jpeg" if ext == ".jpg" else "png"


def _keep(body: bytes, tmp: Path, folder: Path, ident: str, max_side: int) -> dict:
    """Decode the body; the record of the file kept (renamed into folder) or of why not."""
    tmp.write_bytes(body)
    reason = check_image_file(tmp)
    if reason:
        return {"outcome": "not_image", "detail": reason}
    try:
        img = decode_image(tmp)
    except TooManyPixelsError as e:
        return {"outcome": "too_many_pixels", "detail": str(e).split(": ", 1)[-1].split(". ")[0]}
    except ImageError:
        return {"outcome": "not_image", "detail": "cannot decode image (corrupt or unsupported format)"}
    kind = image_kind(body[:16])
    if max_side and max(img.shape[:2]) > max_side:
        body, kind = _shrink_to(body, img, kind, max_side)
        tmp.write_bytes(body)
    path = folder / (ident + EXTENSIONS[kind])
    folder.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)                 # atomic: a kill leaves the file whole or absent
    return {"outcome": "ok", "file": path.name, "sha256": hashlib.sha256(body).hexdigest(),
            "pixels": hashlib.sha256(f"{img.shape}".encode() + img.tobytes()).hexdigest()}


def _adopt(path: Path) -> dict | None:
    """A file already in place whose journal line a kill lost: decoded again, not fetched again
    (None: it does not decode, so it is fetched again)."""
    body = path.read_bytes()
    try:
        img = decode_image(path)
    except ImageError:
        return None
    return {"outcome": "ok", "file": path.name, "sha256": hashlib.sha256(body).hexdigest(),
            "pixels": hashlib.sha256(f"{img.shape}".encode() + img.tobytes()).hexdigest(),
            "detail": "already on disk"}


def _one(client: Client, row: dict, folder: Path, tmp_dir: Path, max_side: int) -> dict:
    t0 = time.monotonic()
    there = _on_disk(folder, row["id"])
    rec = _adopt(there) if there is not None else None
    if rec is not None:
        rec.update(bytes=there.stat().st_size, tries=0, status=0)
    else:
        got: Fetched = client.fetch(row["url"])
        rec = {"outcome": got.outcome, "status": got.status, "detail": got.detail, "tries": got.attempts,
               "bytes": len(got.body)}
        if got.outcome == "ok":
            tmp = tmp_dir / f"{row['id']}.part"
            try:
                rec.update(_keep(got.body, tmp, folder, row["id"], max_side))
            finally:
                tmp.unlink(missing_ok=True)
    rec.update(id=row["id"], url=row["url"], seconds=round(time.monotonic() - t0, 3))
    return rec


# --- the run -----------------------------------------------------------------------------------------

def _check_folder_labels(df: pd.DataFrame, label: str, source: Path) -> None:
    train = df[df["split"] == "train"]
    for r, v in zip(train["row"], train[label]):
        if not v.strip() or v in (".", "..") or "/" in v or "\\" in v or v.startswith("."):
            raise DownloadError(f"{source}: data row {r}: label {v!r} cannot be a folder name (--layout folders); "
                                "use --layout csv")


def _download(rows: pd.DataFrame, label: str, s: Settings) -> dict:
    """Fetch the rows the journals do not have yet (and their failures with --retry-failed)."""
    from tqdm import tqdm  # lazy: only a download draws a bar

    done = read_journals(s.out)
    failed_before = sum(done.get(i, {}).get("outcome") in FAILED for i in rows["id"])
    todo = [r for r in rows.to_dict("records")
            if r["id"] not in done or (s.retry_failed and done[r["id"]]["outcome"] in FAILED)]
    tmp_dir = s.out / STATE / "tmp" / (_journal_name(s.shard).split(".")[0])
    shutil.rmtree(tmp_dir, ignore_errors=True)     # parts a killed run left behind
    tmp_dir.mkdir(parents=True)
    client = Client(s.limits, deadline=time.monotonic() + s.max_time if s.max_time else 0.0)
    counts = {"to_fetch": len(todo), "done_before": len(rows) - len(todo),
              "failed_kept": 0 if s.retry_failed else failed_before, "fetched": 0, "failed": 0, "stopped": 0}
    t0 = time.monotonic()
    with open(s.out / STATE / _journal_name(s.shard), "a", encoding="utf-8") as journal, \
            ThreadPoolExecutor(max_workers=s.workers) as pool, \
            tqdm(total=len(todo), unit="img", desc="download", disable=not s.progress or None) as bar:
        rows_left = iter(todo)
        pending: set = set()
        try:
            while True:
                # a bounded queue: a list of millions of URLs is not millions of futures at once
                for r in itertools.islice(rows_left, 4 * s.workers - len(pending)):
                    pending.add(pool.submit(_one, client, r, _target(s.out, r, label, s.layout), tmp_dir,
                                            s.max_side))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        rec = fut.result()
                    except Stopped:
                        counts["stopped"] += 1
                        continue
                    journal.write(json.dumps(rec) + "\n")
                    journal.flush()            # the line is the OS's once written: a kill cannot lose it
                    counts["fetched"] += 1
                    counts["failed"] += rec["outcome"] in FAILED
                    bar.set_postfix(failed=counts["failed"], refresh=False)
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    counts["seconds"] = round(time.monotonic() - t0, 2)
    counts["per_second"] = round(counts["fetched"] / counts["seconds"], 1) if counts["seconds"] else 0.0
    return counts


def _report_row(row: dict, rec: dict, out_rel: str) -> dict:
    return {"id": row["id"], "url": row["url"], "split": row["split"], "outcome": rec.get("outcome", ""),
            "status": rec.get("status", 0) or "", "bytes": rec.get("bytes", 0), "seconds": rec.get("seconds", ""),
            "tries": rec.get("tries", ""), "detail": rec.get("detail", ""), "file": out_rel}


def finalize(df: pd.DataFrame, label: str, out: Path, layout: str) -> dict:
    """downloads.csv, train.csv and sample_submission.csv from the journals, in the list's order; the
    later of two exact duplicates (same bytes, or same decoded pixels) is removed and reported."""
    done = read_journals(out)
    first_of_url: dict[str, str] = {}
    seen: dict[str, str] = {}
    report, kept = [], []
    for row in df.to_dict("records"):
        rec = done.get(row["id"])
        first = first_of_url.setdefault(row["url"], row["id"])
        rel = ""
        if first != row["id"]:
            rec = {"outcome": "duplicate", "detail": f"same URL as id {first}"}
        elif rec is None:
            rec = {"outcome": "not_tried", "detail": "not fetched yet: run the same command again"}
        elif rec["outcome"] == "ok":
            path = _target(out, row, label, layout) / rec["file"]
            twin, what = ((seen[rec["sha256"]], "bytes") if rec["sha256"] in seen else
                          (seen.get(rec["pixels"]), "decoded pixels"))
            if twin:
                path.unlink(missing_ok=True)
                rec = {**rec, "outcome": "duplicate", "detail": f"duplicate of id {twin} (same {what})"}
            else:
                seen.setdefault(rec["sha256"], row["id"])
                seen.setdefault(rec["pixels"], row["id"])
                rel = path.relative_to(out).as_posix()
                kept.append(row)
        report.append(_report_row(row, rec, rel))
    table = pd.DataFrame(report, columns=REPORT_COLUMNS)
    _write_csv(out / "downloads.csv", table)
    kept_df = pd.DataFrame(kept, columns=df.columns)
    train = kept_df[kept_df["split"] == "train"].drop(columns=["url", "split", "row"])
    test = kept_df[kept_df["split"] == "test"]
    if layout == "csv":
        _write_csv(out / "train.csv", train)
    if len(test):
        name = label or "label"
        guess = train[label].mode().iloc[0] if label and len(train) else "0"
        _write_csv(out / "sample_submission.csv", pd.DataFrame({"id": test["id"], name: guess}))
    return {"rows": len(table), "outcomes": table["outcome"].value_counts().to_dict(), "train": len(train),
            "test": len(test), "downloads_csv": str(out / "downloads.csv"), "out": str(out)}


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_text(path, df.to_csv(index=False, lineterminator="\n"))


def run_download(s: Settings) -> dict:
    """The command: read the list, claim --out, fetch this run's share, write the tables (unless a share
    of a --shard run: then --merge writes them once every share is done)."""
    df, label = read_urls(s.source)
    if s.layout == "folders" and label:
        _check_folder_labels(df, label, s.source)
    _claim(s.out, _plan_hash(df, s.layout), s.resume)
    summary: dict = {"shard": s.shard, "merge": s.merge}
    if not s.merge:
        rows = df[~df["url"].duplicated()]
        if s.shard:
            rows = rows.iloc[s.shard[0]::s.shard[1]]
        summary["fetch"] = _download(rows, label, s)
        if s.shard:
            return summary
    summary.update(finalize(df, label, s.out, s.layout))
    return summary


def summary_text(summary: dict) -> str:
    """The lines the command prints: what was fetched, each outcome's count, where the table is."""
    lines = []
    if f := summary.get("fetch"):
        lines.append(f"fetched {f['fetched']} URL(s) in {f['seconds']:.1f} s ({f['per_second']:.1f} images/s), "
                     f"{f['failed']} failed; {f['done_before']} done before"
                     + (f" ({f['failed_kept']} failure(s) kept: --retry-failed fetches them again)"
                        if f["failed_kept"] else "")
                     + (f"; {f['stopped']} left for a rerun (--max-time)" if f["stopped"] else ""))
    if summary.get("shard") and not summary.get("merge"):
        k, n = summary["shard"]
        lines.append(f"share {k}/{n} done; once every share is, run the same command with --merge")
        return "\n".join(lines)
    counts = ", ".join(f"{n} {OUTCOME_WORDS.get(o, o)}" for o, n in summary["outcomes"].items())
    lines.append(f"{summary['rows']} rows: {counts}")
    lines.append(f"{summary['out']}: {summary['train']} training and {summary['test']} test images; every URL's "
                 f"outcome in {summary['downloads_csv']}")
    return "\n".join(lines)
