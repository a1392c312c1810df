"""Writes link/startup.order: the functions a listener runs from start until it
has served one TCP line and one UDP datagram, for build.rs to place side by
side in the release binary (see build.rs for why): first those an idle
listener runs, then those its first clients add. And link/startup-rodata.ld:
the read-only data an idle listener reads, placed together the same way.

Usage: python3 bench/startup_order.py     (needs valgrind; about 3 minutes)
       python3 bench/startup_order.py --check LINK_MAP
The check (run by packaging/deb.sh on the packaging build's link map) fails
when fewer than CHECK_MIN of the names in link/startup.order are still in the
binary: renamed or moved code, or another toolchain, has made the layout stale,
and it must be made again rather than quietly losing its effect.

How: a release build that also writes lld's link map; that binary runs under
valgrind's callgrind, which records every instruction address executed, and
under lackey, which records every address read; the map names the function
or constant (input section) each address falls in. Run it again after adding
or renaming much start-up code, or after updating dependencies: names that no
longer exist are skipped, so old files only lose effect.
"""
import bisect
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "portier")
ORDER = os.path.join(ROOT, "link", "startup.order")
RODATA_SCRIPT = os.path.join(ROOT, "link", "startup-rodata.ld")
# lld's map: "VMA LMA Size Align Out In Symbol"; input sections are "file:(name)".
INPUT_SECTION = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S+:\((\.\S+)\)$")
PREFIXES = (".text.unlikely.", ".text.startup.", ".text.hot.", ".text.")


# The share of the order's functions that must still exist (a few come and go
# with inlining from one build to the next).
CHECK_MIN = 0.9


def build(env=None):
    # The layout is applied only when asked for (build.rs), as the packaging build does.
    env = dict(env or os.environ, PORTIER_STARTUP_LAYOUT="1")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, env=env, check=True)


def executed_addresses(profile):
    """Addresses executed in the portier binary (callgrind gives them relative to it)."""
    addresses, in_portier = set(), False
    for line in open(profile):
        if line.startswith("ob="):
            in_portier = line.strip() == "ob=" + BINARY
        elif in_portier and line.startswith("fn=0x"):
            addresses.add(int(line[3:21], 16))  # may end in 'N for a recursion level
        elif in_portier and line.startswith("0x"):
            addresses.add(int(line.split()[0], 16))
    return addresses


def input_sections(link_map, kind):
    """(start, size, name) of every input section whose name starts with `kind`
    (".text." for functions, ".rodata" for constants), by address."""
    sections = []
    for line in open(link_map):
        match = INPUT_SECTION.match(line)
        if match and match.group(3).startswith(kind):
            sections.append((int(match.group(1), 16), int(match.group(2), 16), match.group(3)))
    return sorted(sections)


def sections_hit(sections, addresses):
    """The names of the sections that `addresses` fall in, by address."""
    starts = [start for start, _, _ in sections]
    hit = {}
    for address in addresses:
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < sections[i][0] + sections[i][1]:
            hit[sections[i][0]] = sections[i][2]
    return [hit[start] for start in sorted(hit)]


def symbol(section):
    """The function a ".text.NAME" section holds."""
    return next(section[len(p):] for p in PREFIXES if section.startswith(p))


def addresses_read(trace, base):
    """Addresses (relative to the binary) of the loads in a lackey trace."""
    for line in open(trace):
        if line.startswith((" L ", " M ")):
            yield int(line[3:line.index(",")], 16) - base


def load_address(pid):
    """Where the binary is mapped in the process `pid`."""
    for line in open(f"/proc/{pid}/maps"):
        fields = line.split()
        if len(fields) >= 6 and fields[5] == BINARY and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16)
    sys.exit("the binary is not in the listener's memory map")


def run_listener(tool, serve):
    """Runs a listener under valgrind's `tool` (its options), sends it one TCP line
    and one UDP datagram if `serve`, stops it. Returns where the binary was loaded."""
    listener = subprocess.Popen(
        ["valgrind", *tool, BINARY, "listen", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    deadline = time.monotonic() + 60
    while port is None and time.monotonic() < deadline:
        line = listener.stderr.readline()
        match = re.search(r"listening on udp \S+:(\d+)", line)
        port = int(match.group(1)) if match else None
    if port is None:
        listener.kill()
        sys.exit("the listener did not start")
    base = load_address(listener.pid)
    if serve:
        with socket.create_connection(("127.0.0.1", port)) as tcp:
            tcp.sendall(b"startup order\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"startup order\n", ("127.0.0.1", port))
    time.sleep(3)
    listener.send_signal(signal.SIGINT)
    listener.wait(timeout=60)
    return base


def main():
    with tempfile.TemporaryDirectory() as tmp:
        link_map = os.path.join(tmp, "portier.map")
        build(dict(os.environ, PORTIER_LINK_MAP=link_map))
        functions = input_sections(link_map, ".text.")

        def functions_run(serve):
            profile = os.path.join(tmp, f"callgrind.{serve}.out")
            run_listener(["--tool=callgrind", "--dump-instr=yes", "--compress-pos=no",
                          "--compress-strings=no", f"--callgrind-out-file={profile}"], serve)
            return [symbol(name) for name in sections_hit(functions, executed_addresses(profile))]

        # What an idle listener ran comes first: only that stays resident in
        # a listener that never has a client.
        idle = functions_run(serve=False)
        ran_idle = set(idle)
        serving = [name for name in functions_run(serve=True) if name not in ran_idle]

        trace = os.path.join(tmp, "lackey.out")
        base = run_listener(["--tool=lackey", "--trace-mem=yes", f"--log-file={trace}"], False)
        read = sections_hit(input_sections(link_map, ".rodata"), addresses_read(trace, base))
    # First the C start files' code, run before main: the entry point (crt1)
    # and frame_dummy (crtbegin, from .init_array). Their sections are plain
    # .text, which the map does not name after a function.
    with open(ORDER, "w") as order:
        order.writelines(name + "\n" for name in ["_start", "frame_dummy"] + idle + serving)
    with open(RODATA_SCRIPT, "w") as script:
        script.write("/* Made by bench/startup_order.py: the read-only data an idle listener\n"
                     "   reads, placed together ahead of .rodata (see build.rs). */\n"
                     "SECTIONS {\n  .rodata.startup : {\n")
        script.writelines(f"    *({name})\n" for name in sorted(read))
        script.write("  }\n} INSERT BEFORE .rodata;\n")
    print(f"{len(idle)} + {len(serving)} functions written to {os.path.relpath(ORDER, ROOT)}, "
          f"{len(read)} constants to {os.path.relpath(RODATA_SCRIPT, ROOT)}; rebuilding")
    build()


def check(link_map):
    """Exits non-zero when the order file no longer matches the binary of `link_map`."""
    present = {symbol(name) for _, _, name in input_sections(link_map, ".text.")}
    wanted = [line.strip() for line in open(ORDER)][2:]  # _start and frame_dummy are not named
    found = sum(name in present for name in wanted)
    share = found / max(len(wanted), 1)
    print(f"link/startup.order: {found} of {len(wanted)} functions found ({share:.0%})")
    if share < CHECK_MIN:
        sys.exit("link/startup.order is stale: run python3 bench/startup_order.py and commit it")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:
        check(sys.argv[2])
    else:
        main()
