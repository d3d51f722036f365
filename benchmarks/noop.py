"""No-op benchmark: imgbuild's no-op `build` and `status` against `ninja -n` and `make -r -q` on the
same graph, and a fresh clone's `check`.

For each size (default 1,000 / 10,000 / 100,000 targets) it writes a manifest (prompts of ~200
characters; every tenth target an edit of the one before it plus committed art), the outputs
(small distinct PNGs) and their lock entries, as `imgbuild accept` would record them, rather than
rendering 100,000 placeholders: a no-op reads the same files either way. It writes a build.ninja
and a Makefile of the same graph (each output made from the manifest and its input images), lets
ninja build it once with a command that does nothing (so that .ninja_log exists), and settles
imgbuild with full-path runs. Then it times whole processes, paired and alternating (imgbuild
build, imgbuild status, ninja -n, make -r -q, again and again) and prints medians and ratios.

imgbuild runs as an installed console script would: a launcher in a venv of its own whose path
holds this checkout (compiled, as pip compiles what it installs) and the current environment's
site-packages. (A setuptools editable install adds an import hook that costs ~25 ms at every start;
the dev venv's script is timed too, for reference.)

The fresh-clone part commits a project of N targets with ~2 MB PNG outputs to git, clones it, and
times `imgbuild check` in the clone (no .imgbuild/, every mtime new), and, for contrast, the same
with git out of reach (every output hashed).

    python benchmarks/noop.py [--sizes 1000 10000 100000] [--runs 7] [--keep DIR]
                              [--clone-targets 1000] [--clone-mb 2] [--no-clone]

Bars (issue 10): no-op build and status at 10,000 targets ≤ 0.1 s and ≤ 2.5 × ninja -n; at
100,000 ≤ 1.0 s; --help ≤ 0.05 s; cost per target flat from 1,000 to 100,000 (within 1.5 ×);
fresh clone of 1,000 targets of ~2 MB: check ≤ 1 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("knight castle dragon forest river lantern meadow tower banner shield goblin crystal "
         "harbor galleon desert oasis glacier volcano orchard village").split()


# -- the project, and the same graph for ninja and make -------------------------------------------

def write_manifest(root: Path, n: int, size: str = "1024x640") -> list[tuple[str, list[str]]]:
    """Writes images.toml; returns (output, inputs) per target."""
    from PIL import Image

    (root / "art").mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (256, 256), (200, 120, 40, 255)).save(root / "art" / "base.png")
    lines = ['out_dir = "assets"', "", "[provider]", 'name = "placeholder"', "concurrency = 4", "",
             "[vars]", 'style = "flat vector art, thick outlines, pastel palette"', ""]
    graph = []
    for i in range(n):
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(12))
        prompt = f"Target {i}: a scene with {words}, seen from afar at golden hour, ${{style}}"
        prompt = (prompt + " with fine detail" * 10)[:200]
        lines += [f"[images.t{i:06d}]", f'prompt = "{prompt}"', f'size = "{size}"']
        inputs = []
        if i % 10 == 9:
            inputs = [f"assets/t{i - 1:06d}.png", "art/base.png"]
            lines.append(f'images = ["{inputs[0]}", "{inputs[1]}"]')
        lines.append("")
        graph.append((f"assets/t{i:06d}.png", inputs))
    (root / "images.toml").write_text("\n".join(lines))
    return graph


def write_small_outputs(root: Path, graph: list[tuple[str, list[str]]]) -> None:
    from PIL import Image

    (root / "assets").mkdir(exist_ok=True)
    for i, (out, _) in enumerate(graph):
        Image.new("RGB", (16, 10), (i % 256, (i // 256) % 256, (i // 65536) % 256)).save(root / out)


def write_big_outputs(root: Path, graph: list[tuple[str, list[str]]], mb: float) -> None:
    from PIL import Image

    (root / "assets").mkdir(exist_ok=True)
    side = int((mb * 1e6 / 3) ** 0.5)
    for out, _ in graph:  # noise does not compress: a PNG of about `mb` MB, like a real image
        Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(root / out, compress_level=0)


def lock_outputs(root: Path, cache: Path) -> None:
    """Record the outputs on disk in the lock for their current spec, as `imgbuild accept` does
    (edits after the targets they read), without copying them into the cache: a no-op needs none."""
    from imgbuild.cache import OutputInfo, file_digests
    from imgbuild.executor import lock_entry, utc_now
    from imgbuild.images import image_info
    from imgbuild.project import Project

    for _ in range(2):  # first the targets without inputs; then the edits, whose inputs are locked now
        project = Project.load(root, cache_dir=cache)
        for d in project.plan().decisions:
            if d.spec is None or d.state == "ok":
                continue
            outputs = []
            for rel in project.targets[d.name].outputs:
                sha, blob = file_digests(root / rel)
                info = image_info(root / rel)
                outputs.append((rel, OutputInfo(sha, (root / rel).stat().st_size, info.size[0], info.size[1],
                                                info.format, blob)))
            project.lock.set(d.name, lock_entry(d, outputs, "accepted", None, utc_now()))
        project._ensure_state_dir()  # with its .gitignore, as a build makes it: never committed
        project.lock.save()


def write_ninja_and_make(root: Path, graph: list[tuple[str, list[str]]]) -> None:
    ninja = ["rule gen", "  command = :", ""]
    make = [".PHONY: all", "all: " + " ".join(out for out, _ in graph), ""]
    for out, inputs in graph:
        ninja.append(f"build {out}: gen images.toml {' '.join(inputs)}".rstrip())
        make += [f"{out}: images.toml {' '.join(inputs)}".rstrip(), "\t@:"]
    (root / "build.ninja").write_text("\n".join(ninja) + "\n")
    (root / "Makefile").write_text("\n".join(make) + "\n")


# -- running and timing ---------------------------------------------------------------------------

def launcher(work: Path) -> str:
    """A console script for `imgbuild.cli:run` in a venv of its own, as pip writes one."""
    venv = work / "venv"
    script = venv / "bin" / "imgbuild"
    if not script.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        py = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site = venv / "lib" / py / "site-packages"
        (site / "imgbuild-checkout.pth").write_text(f"{ROOT}\n{sysconfig.get_paths()['purelib']}\n")
        script.write_text(f"#!{venv / 'bin' / 'python'}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
                          "from imgbuild.cli import run\nif __name__ == '__main__':\n"
                          "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                          "    sys.exit(run())\n")
        script.chmod(0o755)
    # pip compiles a package when it installs it; this environment may forbid writing bytecode
    # (PYTHONDONTWRITEBYTECODE), which would compile imgbuild's modules again at every start.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "imgbuild")], check=True)
    return str(script)


CPU: dict[str, list[float]] = {}  # command name → CPU seconds (user + system) of each run


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    CPU.setdefault(" ".join(cmd), []).append(_children_cpu() - cpu0)
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout[-300:]} {proc.stderr[-500:]}")
    return elapsed, proc.stdout


def paired(commands: dict[str, list[str]], cwd: Path, env: dict[str, str], runs: int) -> dict[str, list[float]]:
    """Each command once per round, in turn, `runs` rounds: a drift of the machine's speed hits all.
    Wall seconds; the CPU seconds of the same runs go to CPU[name]."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            samples[name].append(run(cmd, cwd, env)[0])
            CPU.setdefault(name, []).append(CPU[" ".join(cmd)].pop())
    return samples


def settle(exe: str, root: Path, env: dict[str, str]) -> None:
    """Full-path no-ops until the no-op state is recorded (files written within the last second
    are racily clean and keep it from being recorded)."""
    for _ in range(5):
        out = run([exe, "build"], root, env)[1]
        if not out.startswith("nothing to do"):
            raise SystemExit(f"the seeded project is not up to date: {out[:300]}")
        if (root / ".imgbuild" / "noop.marshal").exists():
            return
        time.sleep(1.1)
    raise SystemExit("the no-op state was never recorded")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def bench_size(n: int, work: Path, exe: str, env: dict[str, str], runs: int) -> dict[str, float]:
    root = work / f"p{n}"
    if not (root / "build.ninja").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        t0 = time.perf_counter()
        graph = write_manifest(root, n)
        write_small_outputs(root, graph)
        lock_outputs(root, work / "cache")
        write_ninja_and_make(root, graph)
        print(f"{n} targets: project written and locked in {time.perf_counter() - t0:.1f} s")
    has_ninja, has_make = shutil.which("ninja") is not None, shutil.which("make") is not None
    if has_ninja and not (root / ".ninja_log").exists():
        subprocess.run(["ninja", "-j", "4"], cwd=root, check=True, capture_output=True)
    settle(exe, root, env)
    commands = {"build": [exe, "build"], "status": [exe, "status"]}
    if has_ninja:
        if "no work to do" not in run(["ninja", "-n"], root, env)[1]:
            raise SystemExit("ninja -n has work to do: the graph is not up to date")
        commands["ninja -n"] = ["ninja", "-n"]
    if has_make:
        run(["make", "-r", "-q"], root, env)  # exit 0: up to date
        commands["make -r -q"] = ["make", "-r", "-q"]
    samples = paired(commands, root, env, runs)
    med = {name: statistics.median(s) for name, s in samples.items()}
    size_mb = (root / "images.toml").stat().st_size / 1e6
    lock_mb = (root / "images.lock").stat().st_size / 1e6
    print(f"\n{n:,} targets (manifest {size_mb:.1f} MB, lock {lock_mb:.1f} MB), medians of {runs} paired runs:")
    cpu = {name: statistics.median(CPU[name][-runs:]) for name in commands}
    for name, value in med.items():
        spread = f"{min(samples[name]) * 1000:.1f}–{max(samples[name]) * 1000:.1f}"
        print(f"  {name:<12} wall {ms(value):>10}   cpu {ms(cpu[name]):>10}   (wall runs {spread} ms)")
    med.update({f"cpu {name}": value for name, value in cpu.items()})
    for name in ("build", "status"):
        per = (cpu[name] - statistics.median(CPU["--version"])) / n * 1e6
        ratios = []
        if has_ninja:
            pairs = [a / b for a, b in zip(samples[name], samples["ninja -n"])]
            ratios.append(f"{med[name] / med['ninja -n']:.2f} × ninja -n (paired median {statistics.median(pairs):.2f}; "
                          f"cpu {cpu[name] / cpu['ninja -n']:.2f} ×)")
        if has_make:
            ratios.append(f"{med[name] / med['make -r -q']:.2f} × make -r -q")
        print(f"  {name}: {per:.2f} µs of cpu per target beyond start-up; " + ", ".join(ratios))
    if not has_ninja:
        print("  (ninja not found: apt-get install ninja-build to compare)")
    if not has_make:
        print("  (make not found: compare with GNU make by installing it)")
    return med


# -- the fresh clone ------------------------------------------------------------------------------

def bench_clone(n: int, mb: float, work: Path, exe: str, env: dict[str, str], runs: int) -> None:
    if shutil.which("git") is None:
        print("\nfresh clone: git not found, skipped")
        return
    origin, clone = work / f"git{n}", work / f"clone{n}"
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "core.looseCompression=0"]
    if not (origin / ".git").exists():
        shutil.rmtree(origin, ignore_errors=True)
        origin.mkdir(parents=True)
        t0 = time.perf_counter()
        graph = write_manifest(origin, n, size="1024x1024")
        write_big_outputs(origin, graph, mb)
        lock_outputs(origin, work / "cache")
        subprocess.run([*git, "init", "-q"], cwd=origin, check=True)
        subprocess.run([*git, "add", "-A"], cwd=origin, check=True)
        subprocess.run([*git, "commit", "-q", "-m", "built"], cwd=origin, check=True)
        print(f"\nfresh clone: {n} targets of {mb} MB committed in {time.perf_counter() - t0:.1f} s")
    shutil.rmtree(clone, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    total_mb = sum(p.stat().st_size for p in (clone / "assets").iterdir()) / 1e6
    print(f"fresh clone: cloned in {time.perf_counter() - t0:.1f} s ({total_mb:,.0f} MB of outputs)")
    # check writes nothing (no .imgbuild/ appears), so every run sees the clone as fresh.
    samples = [run([exe, "check"], clone, env)[0] for _ in range(runs)]
    cpu = CPU.pop(" ".join([exe, "check"]))  # CPU seconds of the same runs (the load moves them less)
    assert not (clone / ".imgbuild").exists()
    no_git = {**env, "GIT_DIR": str(work / "no-such-git-dir")}  # git out of reach: every output hashed
    hashed = [run([exe, "check"], clone, no_git)[0] for _ in range(max(1, runs // 2))]
    print(f"fresh clone, {n:,} targets, {total_mb / n:.1f} MB each: check median {ms(statistics.median(samples))} "
          f"wall, {ms(statistics.median(cpu))} cpu (runs {', '.join(f'{s:.3f}' for s in samples)}; load average "
          f"{os.getloadavg()[0]:.2f}); without git's word: {ms(statistics.median(hashed))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build the projects here and keep them (reused when present)")
    parser.add_argument("--clone-targets", type=int, default=1000)
    parser.add_argument("--clone-mb", type=float, default=2.0)
    parser.add_argument("--no-clone", action="store_true")
    args = parser.parse_args()

    work = (args.keep or Path(tempfile.mkdtemp(prefix="imgbuild-noop-"))).absolute()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "IMGBUILD_CACHE_DIR": str(work / "cache")}
    # A user's shell: no provider override, and stdout buffered as usual (PYTHONUNBUFFERED would
    # make every printed line a write of its own).
    for key in ("IMGBUILD_PROVIDER", "IMGBUILD_BASE_URL", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"):
        env.pop(key, None)
    exe = launcher(work)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; work in {work}")
    tools = [subprocess.run([t, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
             for t in ("ninja", "make") if shutil.which(t)]
    print("yardsticks: " + ("; ".join(tools) or "none found"))

    start = paired({"--help": [exe, "--help"], "--version": [exe, "--version"]}, work, env, max(args.runs, 15))
    fixed_s = statistics.median(start["--version"])
    print(f"imgbuild --help: median {ms(statistics.median(start['--help']))} wall, "
          f"{ms(statistics.median(CPU['--help']))} cpu (bar 50 ms); --version (start-up alone) {ms(fixed_s)}")
    dev = shutil.which("imgbuild", path=str(Path(sys.executable).parent))
    if dev:
        print(f"  (the dev venv's script, {dev}: --help median "
              f"{ms(statistics.median(paired({'h': [dev, '--help']}, work, env, 9)['h']))})")

    results = {n: bench_size(n, work, exe, env, args.runs) for n in sorted(args.sizes)}
    sizes = sorted(results)
    for name in ("build", "status"):
        # Marginal cost: what each further target costs, between one size and the next (cpu, so
        # that other load on the machine moves it less).
        steps = [(results[b][f"cpu {name}"] - results[a][f"cpu {name}"]) / (b - a) for a, b in zip(sizes, sizes[1:])]
        if steps:
            print(f"{name}: cpu per further target " + ", ".join(
                f"{a:,}→{b:,}: {step * 1e6:.2f} µs" for (a, b), step in zip(zip(sizes, sizes[1:]), steps))
                + f"; largest/smallest {max(steps) / min(steps):.2f} × (bar 1.5 ×)")
    if not args.no_clone:
        bench_clone(args.clone_targets, args.clone_mb, work, exe, env, max(3, args.runs // 2))


if __name__ == "__main__":
    main()
