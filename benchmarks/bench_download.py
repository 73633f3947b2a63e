"""src/download.py's images/s against a plain sequential urllib loop, on a local HTTP server:

    python benchmarks/bench_download.py [--n 2000] [--latency 0,0.02]

The server (a separate process: a threaded HTTP/1.1 server with keep-alive, the standard library's) serves N
real photos (UTKFace crop_part1, 200x200 JPEG, in ../shared/data), each answer delayed by --latency seconds
(0: the loopback alone; 0.02: a remote server's round trip). Measured per latency: the loop
`urllib.request.urlopen(url).read()` + write, one URL after the other (no decode, no checks), and
foldkit.data.download with 16 and 64 downloads in flight (--per-host as many: one host here), each
file decoded with the kit's decoder, hashed, written atomically and journaled.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
UTK = REPO.parent / "shared" / "data" / "utkface" / "crop_part1"

SERVER = r"""
import sys, time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        time.sleep(float(sys.argv[2]))
        super().do_GET()

httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=sys.argv[1]))
httpd.daemon_threads = True
print(httpd.server_port, flush=True)
httpd.serve_forever()
"""


def serve(folder: Path, latency: float):
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(folder), str(latency)], stdout=subprocess.PIPE,
                            text=True)
    return proc, f"http://127.0.0.1:{proc.stdout.readline().strip()}"


def plain_loop(urls: list[str], out: Path) -> float:
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for i, u in enumerate(urls):
        with urllib.request.urlopen(u, timeout=20) as r:
            (out / f"{i}.jpg").write_bytes(r.read())
    return len(urls) / (time.perf_counter() - t0)


def kit(urls: list[str], out: Path, workers: int, work: Path) -> float:
    import pandas as pd

    from foldkit.data.download import Settings, run_download
    from foldkit.data.fetch import Limits
    csv = work / f"urls{workers}.csv"
    pd.DataFrame({"url": urls, "label": [i % 2 for i in range(len(urls))]}).to_csv(csv, index=False)
    t0 = time.perf_counter()
    s = run_download(Settings(source=csv, out=out, workers=workers, progress=False,
                              limits=Limits(per_host=workers)))
    seconds = time.perf_counter() - t0
    # UTKFace holds exact copies under other names: they are kept once (outcome duplicate)
    assert s["outcomes"].get("ok", 0) + s["outcomes"].get("duplicate", 0) == len(urls), s["outcomes"]
    return len(urls) / seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--latency", default="0,0.02", help="seconds each answer waits, comma-separated")
    args = ap.parse_args()
    files = sorted(UTK.glob("*.jpg"))[:args.n]
    work = Path(tempfile.mkdtemp(prefix="bench_download."))
    site = work / "site"
    site.mkdir()
    for i, f in enumerate(files):
        shutil.copyfile(f, site / f"{i:05d}.jpg")
    size = sum(f.stat().st_size for f in files) / len(files)
    print(f"{len(files)} photos, {size / 1024:.1f} KiB on average")
    try:
        for latency in [float(x) for x in args.latency.split(",")]:
            proc, base = serve(site, latency)
            try:
                urls = [f"{base}/{i:05d}.jpg" for i in range(len(files))]
                row = {"sequential urllib": plain_loop(urls, work / f"plain{latency}")}
                for w in (16, 64):
                    row[f"download.py, {w} in flight"] = kit(urls, work / f"kit{w}-{latency}", w, work)
            finally:
                proc.terminate()
                proc.wait()
            for name, rate in row.items():
                print(f"latency {latency * 1000:.0f} ms | {name}: {rate:.0f} images/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
