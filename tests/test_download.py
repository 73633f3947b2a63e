"""src/download.py: a URL list into a competition, against a real HTTP server started here that serves real
photos (../shared/data/hymenoptera) and every fault a download meets."""
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO, need_shared
from foldkit import cli
from foldkit.data.download import read_journals, shard_spec
from foldkit.data.fetch import retry_after

TINY = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--batch-size", "16",
        "--no-pretrained", "--no-progress", "--workers", "0", "--warmup-epochs", "0", "--epochs", "1"]
HUGE = 50 << 20


class Server:
    """A threaded HTTP/1.1 server (keep-alive) on a free port; counts requests per path."""

    def __init__(self, images: dict[str, bytes], delay: float = 0.0):
        self.images, self.delay = images, delay
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        self.huge_sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                with outer.lock:
                    n = outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                time.sleep(outer.delay)
                outer.route(self, self.path, n)

        # a listen backlog of 5 (the standard library's default) drops the SYNs of a 16-thread client on a
        # loaded machine: connects then take the 1 s of a SYN retransmit, past --timeout 1
        self.httpd = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 128})(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None         # a client hanging up mid-body is expected here
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def send(h, status, body=b"", ctype="image/jpeg", **headers):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k.replace("_", "-"), v)
        h.end_headers()
        h.wfile.write(body)

    def route(self, h, path, n):
        name = path.rsplit("/", 1)[-1]
        img = self.images.get(name, b"")
        if path.startswith("/img/") and img:
            self.send(h, 200, img)
        elif path.startswith("/once/") and img:            # closes the connection it said it keeps
            self.send(h, 200, img)
            h.close_connection = True
        elif path.startswith("/flaky/"):                      # 500 then 200
            self.send(h, 500, b"oops", "text/plain") if n == 1 else self.send(h, 200, img)
        elif path.startswith("/busy/"):                       # 429 Retry-After: 1 then 200
            self.send(h, 429, b"slow down", "text/plain", Retry_After="1") if n == 1 else self.send(h, 200, img)
        elif path.startswith("/slow/"):                       # past the 1 s timeout, every time
            time.sleep(2.5)
            self.send(h, 200, img)
        elif path.startswith("/truncated/"):
            self.send(h, 200, img[: len(img) // 2])
        elif path == "/html.jpg":
            self.send(h, 200, b"<html><body>404 Not Found</body></html>")
        elif path == "/empty.jpg":
            self.send(h, 200, b"")
        elif path == "/huge":                                 # no Content-Length: only streaming can stop it
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Connection", "close")
            h.end_headers()
            chunk = b"\xff\xd8\xff" + b"\0" * 65533
            try:
                while self.huge_sent < HUGE:
                    h.wfile.write(chunk)
                    self.huge_sent += len(chunk)
            except OSError:
                pass
            h.close_connection = True
        elif path == "/huge-declared":
            h.send_response(200)
            h.send_header("Content-Length", str(HUGE))
            h.end_headers()
            h.close_connection = True
        elif path == "/loop":
            self.send(h, 302, b"", "text/plain", Location="/loop")
        elif path == "/to-file":
            self.send(h, 302, b"", "text/plain", Location="file:///etc/passwd")
        elif path.startswith("/moved/"):
            self.send(h, 301, b"", "text/plain", Location=f"/img/{name}")
        else:
            self.send(h, 404, b"not found", "text/plain")


def np_bytes(data: bytes):
    import numpy as np
    return np.frombuffer(data, np.uint8)


def photos(n: int) -> dict[str, bytes]:
    """The n smallest real photos of hymenoptera, half of each class, by name (the class first)."""
    root = need_shared("data", "hymenoptera", "train")
    files = [p for cls in ("ants", "bees")
             for p in sorted(root.glob(f"{cls}/*.jp*g"), key=lambda p: p.stat().st_size)[:n // 2]]
    return {f"{p.parent.name}-{p.stem.replace(' ', '_')}.jpg": p.read_bytes() for p in files}


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def table(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def download(*argv):
    return cli.run_script("download", [str(a) for a in argv] + ["--no-progress"])


@pytest.fixture
def served():
    servers = []

    def start(images, delay=0.0):
        servers.append(Server(images, delay))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def test_every_fault_gets_its_outcome_and_only_whole_images_are_kept(tmp_path, served):
    import cv2
    imgs = photos(8)
    names = list(imgs)
    pixels = cv2.imdecode(np_bytes(imgs[names[6]]), cv2.IMREAD_COLOR)      # a photo served only as PNG
    imgs["a.png"] = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    imgs["b.png"] = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    assert imgs["a.png"] != imgs["b.png"]
    srv = served(imgs)
    u = srv.url
    rows = [{"url": f"{u}/img/{n}", "label": n.split("-")[0], "split": "train", "source": "web"} for n in names[:4]]
    rows += [
        {"url": f"{u}/moved/{names[0]}", "label": "ants", "split": "train", "source": "same photo, other URL"},
        {"url": f"{u}/img/{names[1]}", "label": "ants", "split": "train", "source": "same URL twice"},
        {"url": f"{u}/img/a.png", "label": "ants", "split": "train", "source": "png"},
        {"url": f"{u}/img/b.png", "label": "ants", "split": "train", "source": "same pixels, other bytes"},
        {"url": f"{u}/flaky/{names[4]}", "label": "bees", "split": "train", "source": "500 then 200"},
        {"url": f"{u}/busy/{names[5]}", "label": "bees", "split": "test", "source": "429 then 200"},
        {"url": f"{u}/missing.jpg", "label": "bees", "split": "train", "source": "404"},
        {"url": f"{u}/slow/{names[2]}", "label": "ants", "split": "train", "source": "slow"},
        {"url": f"{u}/truncated/{names[3]}", "label": "ants", "split": "train", "source": "truncated"},
        {"url": f"{u}/html.jpg", "label": "ants", "split": "train", "source": "html"},
        {"url": f"{u}/empty.jpg", "label": "ants", "split": "train", "source": "zero bytes"},
        {"url": f"{u}/huge", "label": "ants", "split": "train", "source": "huge"},
        {"url": f"{u}/huge-declared", "label": "ants", "split": "train", "source": "huge declared"},
        {"url": f"{u}/loop", "label": "ants", "split": "train", "source": "loop"},
        {"url": f"{u}/to-file", "label": "ants", "split": "train", "source": "to file"},
        {"url": "file:///etc/passwd", "label": "ants", "split": "train", "source": "file"},
        {"url": "ftp://127.0.0.1/x.jpg", "label": "ants", "split": "train", "source": "ftp"},
    ]
    out = tmp_path / "comp"
    t0 = time.time()
    download(write_csv(tmp_path / "urls.csv", rows), "--out", out, "--timeout", "1", "--retries", "1",
             "--max-bytes", "1000000")
    assert time.time() - t0 < 20
    report = {row["source"]: r for row, r in zip(rows, table(out / "downloads.csv"))}   # in the list's order
    train = table(out / "train.csv")
    got = {k: (r["outcome"], r["status"]) for k, r in report.items()}
    assert got == {"web": ("ok", "200"), "png": ("ok", "200"), "same pixels, other bytes": ("duplicate", "200"), "same photo, other URL": ("duplicate", "200"),
                   "same URL twice": ("duplicate", ""), "500 then 200": ("ok", "200"), "429 then 200": ("ok", "200"),
                   "404": ("http", "404"), "slow": ("timeout", ""), "truncated": ("not_image", "200"),
                   "html": ("not_image", "200"), "zero bytes": ("not_image", "200"), "huge": ("too_large", "200"),
                   "huge declared": ("too_large", "200"), "loop": ("redirects", "302"),
                   "to file": ("refused", "302"), "file": ("refused", ""), "ftp": ("refused", "")}, \
        {k: (r["tries"], r["detail"]) for k, r in report.items()}                 # what each try met, if not
    assert len([r for r in table(out / "downloads.csv") if r["outcome"] == "ok"]) == 7
    assert report["same photo, other URL"]["detail"] == f"duplicate of id {train[0]['id']} (same bytes)"
    assert report["same pixels, other bytes"]["detail"] == f"duplicate of id {train[4]['id']} (same decoded pixels)"
    assert report["truncated"]["detail"].startswith("truncated") and report["zero bytes"]["detail"] == "zero bytes"
    assert report["429 then 200"]["tries"] == "2" and float(report["429 then 200"]["seconds"]) >= 1.0
    assert int(report["huge"]["bytes"]) == 0 and srv.huge_sent < 8 * 1000000     # stopped near the limit
    assert srv.hits["/slow/" + names[2]] == 2                                      # one retry, then given up
    assert [r["source"] for r in train] == ["web"] * 4 + ["png", "500 then 200"]
    assert list(train[0]) == ["id", "label", "source"]
    files = sorted(p.name for p in (out / "train").iterdir())
    assert files == sorted(f"{r['id']}.{'png' if r['source'] == 'png' else 'jpg'}" for r in train)
    for r, n in zip(train[:4], names):                                             # stored as received
        assert (out / "train" / f"{r['id']}.jpg").read_bytes() == imgs[n]
    [test_row] = table(out / "sample_submission.csv")
    assert (out / "test" / f"{test_row['id']}.jpg").read_bytes() == imgs[names[5]]
    assert not list((out / ".download" / "tmp").rglob("*.part"))
    # a rerun fetches nothing; --retry-failed fetches the failures again, never a finished file
    hits = dict(srv.hits)
    again = download(tmp_path / "urls.csv", "--out", out)
    assert srv.hits == hits and again["fetch"]["to_fetch"] == 0 and again["fetch"]["failed_kept"] == 11
    download(tmp_path / "urls.csv", "--out", out, "--retry-failed", "--timeout", "1", "--retries", "0")
    assert srv.hits["/missing.jpg"] == 2 and srv.hits[f"/img/{names[0]}"] == hits[f"/img/{names[0]}"]


def test_killed_half_way_the_rerun_finishes_without_fetching_a_finished_file_then_folds_and_training(
        tmp_path, served):
    imgs = photos(40)
    srv = served(imgs, delay=0.08)
    rows = [{"url": f"{srv.url}/img/{n}", "label": n.split("-")[0]} for n in imgs]
    urls = write_csv(tmp_path / "urls.csv", rows)
    out = tmp_path / "input"
    cmd = [sys.executable, str(REPO / "src" / "download.py"), str(urls), "--out", str(out), "--workers", "2",
           "--max-side", "48", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = out / ".download" / "journal.jsonl"
    deadline = time.time() + 30
    while time.time() < deadline and (not journal.is_file() or journal.read_text().count("\n") < 12):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = set(read_journals(out)) | {p.stem for p in (out / "train").glob("*.jpg")}
    assert 12 <= len(finished) < 40 and not (out / "train.csv").exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "40 rows: 40 ok" in r.stdout
    ids = {row["id"]: row["url"] for row in table(out / "downloads.csv")}
    for ident in finished:
        assert srv.hits[ids[ident][len(srv.url):]] == 1, ident
    assert max(srv.hits.values()) <= 2        # only a request cut by the kill is made again
    assert len(table(out / "train.csv")) == 40
    common = ["--input-dir", str(out), "--folds-dir", str(tmp_path / "folds")]
    assert cli.run_script("make_folds", common + ["--n-folds", "2"])["rows"] == 40
    [fold] = cli.run_script("train", common + ["--models-dir", str(tmp_path / "models"), *TINY, "--fold", "0"])
    assert fold["fold"] == 0 and fold["epochs_run"] == 1


def test_folder_of_class_lists_shards_merge_and_max_side(tmp_path, served):
    imgs = photos(8)
    srv = served(imgs)
    lists = tmp_path / "lists"
    lists.mkdir()
    for cls in ("ants", "bees"):
        urls = [f"{srv.url}/img/{n}" for n in imgs if n.startswith(cls)]
        (lists / f"{cls}.txt").write_text("# one URL a line\n\n" + "\n".join(urls) + "\n")
    out = tmp_path / "comp"
    for k in (0, 1):
        s = download(lists, "--out", out, "--layout", "folders", "--shard", f"{k}/2", "--max-side", "64")
        assert s["fetch"]["fetched"] == 4 and not (out / "downloads.csv").exists()
    merged = download(lists, "--out", out, "--layout", "folders", "--merge", "--max-side", "64")
    assert merged["outcomes"] == {"ok": 8} and sorted(p.name for p in (out / ".download").glob("j*")) == [
        "journal-0-of-2.jsonl", "journal-1-of-2.jsonl"]
    import cv2
    for cls in ("ants", "bees"):
        kept = list((out / "train" / cls).iterdir())
        assert len(kept) == sum(n.startswith(cls) for n in imgs)
        assert all(max(cv2.imread(str(p)).shape[:2]) == 64 for p in kept)
    assert not (out / "train.csv").exists()
    from foldkit.data.reading import read_competition
    comp = read_competition(out)
    assert comp.layout == "class_folders" and len(comp.train) == 8


def test_overall_time_limit_leaves_the_rest_for_a_rerun_and_the_pixel_limit_holds(tmp_path, served, monkeypatch):
    imgs = photos(6)
    srv = served(imgs, delay=0.3)
    urls = write_csv(tmp_path / "urls.csv", [{"url": f"{srv.url}/img/{n}", "label": n[:4]} for n in imgs])
    out = tmp_path / "comp"
    first = download(urls, "--out", out, "--workers", "1", "--max-time", "0.5")
    assert first["fetch"]["stopped"] >= 3 and first["outcomes"]["not_tried"] == first["fetch"]["stopped"]
    assert download(urls, "--out", out, "--workers", "3")["outcomes"] == {"ok": 6}
    monkeypatch.setenv("FOLDKIT_MAX_IMAGE_PIXELS", "1000")
    big = download(urls, "--out", tmp_path / "small", "--workers", "3")
    assert big["outcomes"] == {"too_many_pixels": 6} and not (tmp_path / "small" / "train").exists()
    detail = table(tmp_path / "small" / "downloads.csv")[0]["detail"]
    assert "pixels is more than the limit of 1,000 decoded pixels per image" in detail


def test_a_kept_alive_connection_the_server_closed_is_reopened_not_counted_as_a_failed_try(tmp_path, served):
    imgs = photos(4)
    srv = served(imgs)
    urls = write_csv(tmp_path / "urls.csv", [{"url": f"{srv.url}/once/{n}", "label": n[:4]} for n in imgs])
    assert download(urls, "--out", tmp_path / "comp", "--workers", "1")["outcomes"] == {"ok": 4}
    assert [r["tries"] for r in table(tmp_path / "comp" / "downloads.csv")] == ["1"] * 4


def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    def error(*argv):
        with pytest.raises(SystemExit) as e:
            download(*argv)
        assert e.value.code == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        return line

    no_url = write_csv(tmp_path / "a.csv", [{"link": "http://x/1.jpg", "label": "a"}])
    assert error(no_url, "--out", tmp_path / "o") == (f"error: {no_url}: no `url` column (columns: link, label); "
                                                      "name the column of image URLs `url`")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 10)
    assert error(binary, "--out", tmp_path / "o").startswith(f"error: {binary}: cannot read the URL list")
    assert "cannot read the URL list" in error(tmp_path / "none.csv", "--out", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "ants.txt").write_text("# nothing yet\n")
    assert error(tmp_path / "empty", "--out", tmp_path / "o") == f"error: {tmp_path / 'empty'}: no URLs in the list"
    bad_id = write_csv(tmp_path / "c.csv", [{"url": "http://x/1.jpg", "label": "a", "id": "../etc"}])
    assert "data row 1: id '../etc' is not a file name" in error(bad_id, "--out", tmp_path / "o")
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "train.csv").write_text("id,label\n")
    ok = write_csv(tmp_path / "d.csv", [{"url": "ftp://x/1.jpg", "label": "a"}])
    assert error(ok, "--out", comp).endswith("choose an empty --out, or pass --resume to download into it")
    assert download(ok, "--out", comp, "--resume")["outcomes"] == {"refused": 1}
    assert error(ok, "--out", comp, "--shard", "2/2").startswith("error: --shard 2/2: give K/N")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert "give --shard env/N" in error(ok, "--out", comp, "--shard", "env")
    assert shard_spec("env/4") == (1, 4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert shard_spec("env") == (3, 4)
    hosts = write_csv(tmp_path / "h.csv", [{"url": "http://127.0.0.1:9/1.jpg", "label": "a"}])
    assert download(hosts, "--out", tmp_path / "h", "--allow-host", "example.com")["outcomes"] == {"refused": 1}
    assert table(tmp_path / "h" / "downloads.csv")[0]["detail"] == "host 127.0.0.1 is not in --allow-host"
    with pytest.raises(SystemExit):
        download(ok)                                                   # --out is required
    assert capsys.readouterr().err.strip() == ("error: the following arguments are required: --out "
                                               "(see download.py --help)")
    other = write_csv(tmp_path / "e.csv", [{"url": "ftp://y/1.jpg", "label": "a"}])
    assert "holds the download of another URL list" in error(other, "--out", comp)


def test_retry_after_reads_seconds_and_dates():
    assert retry_after("3") == 3.0 and retry_after(None) is None and retry_after("soon") is None
    assert 5 < retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))) <= 11
