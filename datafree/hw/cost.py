"""Hardware cost of a MAC per (weight, activation) format pair, from real logic synthesis.

``synthesize(w, a)`` writes the MAC of ``verilog.mac_verilog`` and runs Yosys' generic LUT-6 flow
(``synth -lut 6``: 6-input LUTs and flip-flops, no DSP blocks) and reads the LUT and FF counts and the
logic depth (``ltp -noff``: the longest combinational path, in cells).  ``build_table`` does that for
every pair of formats of 3 to 8 bits (integers and every minifloat split) and writes the table the
sweep reads - ``datafree/hw/mac_costs.csv``, committed, rebuilt by ``python -m datafree.hw.cost``
(needs the Debian package ``yosys``; ``make hw-costs`` installs it).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from datafree.errors import DatafreeError
from datafree.hw.verilog import acc_width, mac_verilog
from datafree.quant.formats import Format, format_splits, parse_format

TABLE = Path(__file__).with_name("mac_costs.csv")
FIELDS = ["weights", "activations", "w_bits", "a_bits", "luts", "ffs", "depth", "acc_bits", "yosys"]


def yosys_path() -> str | None:
    return shutil.which("yosys")


def format_key(fmt: Format) -> str:
    """The sweep's name for a format: int<b> or e<E>m<M> (all codes finite, IEEE bias)."""
    return fmt.name if fmt.__class__.__name__ == "IntFormat" else f"e{fmt.e}m{fmt.m}"


def synthesize(w: Format, a: Format, yosys: str | None = None) -> dict:
    yosys = yosys or yosys_path()
    if yosys is None:
        raise DatafreeError("synthesizing MACs needs Yosys: apt-get install yosys (or `make hw-costs`)")
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "mac.v"
        src.write_text(mac_verilog(w, a))
        stat, ltp = Path(d) / "stat.txt", Path(d) / "ltp.txt"
        cmd = f"read_verilog {src}; synth -lut 6 -top mac; tee -q -o {stat} stat; tee -q -o {ltp} ltp -noff"
        r = subprocess.run([yosys, "-q", "-p", cmd], capture_output=True, text=True, timeout=600)
        if r.returncode:
            raise DatafreeError(f"yosys failed on {w.name} x {a.name}: {r.stderr.strip().splitlines()[-1:]}")
        s, lt = stat.read_text(), ltp.read_text()
    luts = re.search(r"\$lut\s+(\d+)", s)
    ffs = sum(int(n) for n in re.findall(r"\$_S?DFF\w*\s+(\d+)", s))
    depth = re.search(r"length=(\d+)", lt)
    version = subprocess.run([yosys, "-V"], capture_output=True, text=True).stdout.split("(")[0].strip()
    return {"weights": format_key(w), "activations": format_key(a), "w_bits": w.bits, "a_bits": a.bits,
            "luts": int(luts.group(1)) if luts else 0, "ffs": ffs, "depth": int(depth.group(1)) if depth else 0,
            "acc_bits": acc_width(w, a), "yosys": version}


def all_formats(bits: range = range(3, 9)) -> list[Format]:
    return [f for b in bits for f in format_splits(b)]


def build_table(path: str | os.PathLike = TABLE, bits: range = range(3, 9), jobs: int = 2) -> list[dict]:
    fmts = all_formats(bits)
    pairs = [(w, a) for w in fmts for a in fmts]
    with ThreadPoolExecutor(jobs) as ex:
        rows = list(ex.map(lambda p: synthesize(*p), pairs))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        wr = csv.DictWriter(f, FIELDS)
        wr.writeheader()
        wr.writerows(rows)
    os.replace(tmp, path)
    return rows


def load_table(path: str | os.PathLike = TABLE) -> dict[tuple[str, str], dict]:
    if not Path(path).is_file():
        raise DatafreeError(f"no MAC cost table at {path}: run `python -m datafree.hw.cost` (needs yosys)")
    with open(path) as f:
        return {(r["weights"], r["activations"]): {k: (int(v) if v.isdigit() else v) for k, v in r.items()}
                for r in csv.DictReader(f)}


def mac_cost(w: str | Format, a: str | Format, table: dict | None = None) -> dict:
    """The synthesized cost of a (weights, activations) MAC from the committed table."""
    wf = parse_format(w) if isinstance(w, str) else w
    af = parse_format(a) if isinstance(a, str) else a
    table = table if table is not None else load_table()
    key = (format_key(wf), format_key(af))
    if key not in table:
        raise DatafreeError(f"no synthesized MAC for {key[0]} x {key[1]} (the table covers 3-8 bit formats)")
    return table[key]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Synthesize every 3-8 bit MAC pair with Yosys; write the cost table.")
    ap.add_argument("--out", default=str(TABLE))
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    rows = build_table(a.out, jobs=a.jobs)
    print(f"{len(rows)} MACs synthesized -> {a.out}")


if __name__ == "__main__":
    main()
