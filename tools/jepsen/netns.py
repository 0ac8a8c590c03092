"""The test network: one Linux bridge in the root namespace, one network
namespace per node joined to it by a veth pair, and the iptables rules the
nemesis cuts links with.

Why namespaces: a partition has to cut real TCP links between real
processes, while the harness (in the root namespace, on the bridge's own
address) keeps reaching every node.  Rules live inside each node's
namespace, so nothing here touches the host's own traffic.  Every name
carries the harness's pid, so parallel runs do not clash, and resources
left by a run that died (its pid gone) are swept at the next start."""
import ipaddress
import os
import re
import shutil
import subprocess

PREFIX = "rj"  # rj<pid>n<i> namespaces, rj<pid>v<i> veths, rj<pid>br the bridge
BRIDGE_HOST = 254  # the harness's address on the bridge: 10.77.X.254


class NetError(RuntimeError):
    """An `ip` or `iptables` command failed; the message names it."""


def run(*argv, check=True, stdin=None):
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def missing_requirements():
    """What this machine lacks to build the network (empty when nothing)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces and iptables need it)")
    for tool in ("ip", "iptables", "iptables-restore"):
        if shutil.which(tool) is None:
            missing.append(f"the `{tool}` command")
    if not missing:
        probe = f"{PREFIX}{os.getpid()}probe"
        made = run("ip", "netns", "add", probe, check=False)
        if made.returncode != 0:
            missing.append(f"`ip netns add` ({made.stderr.strip()})")
        else:
            rules = run("ip", "netns", "exec", probe, "iptables", "-S", check=False)
            run("ip", "netns", "del", probe, check=False)
            if rules.returncode != 0:
                missing.append(f"iptables inside a namespace ({rules.stderr.strip()})")
    return missing


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale():
    """Deletes the namespaces, bridges and FORWARD rules of earlier runs
    whose harness is gone (killed before it could clean up), with the
    processes inside.  Returns what it removed."""
    removed = []
    pattern = re.compile(rf"^{PREFIX}(\d+)(n\d+|probe|br)$")
    namespaces = run("ip", "netns", "list", check=False).stdout.split("\n")
    links = run("ip", "-o", "link", "show", "type", "bridge", check=False).stdout.split("\n")
    names = [line.split()[0] for line in namespaces if line.strip()]
    names += [line.split(":")[1].strip().split("@")[0] for line in links if line.count(":") >= 2]
    for name in names:
        match = pattern.match(name)
        if not match or _alive(int(match.group(1))):
            continue
        if match.group(2) == "br":
            run("ip", "link", "del", name, check=False)
        else:
            pids = run("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", name, check=False)
        removed.append(name)
    for line in run("iptables", "-S", "FORWARD", check=False).stdout.splitlines():
        match = re.match(rf"^-A FORWARD -i ({PREFIX}(\d+)br) -o \1 -j ACCEPT$", line.strip())
        if match and not _alive(int(match.group(2))):
            run("iptables", "-D", *line.split()[1:], check=False)
            removed.append(f"FORWARD rule of {match.group(1)}")
    return removed


def free_subnet(start):
    """A 10.77.X.0/24 no interface of the root namespace uses, from X = start."""
    used = run("ip", "-4", "-o", "addr", check=False).stdout
    for step in range(250):
        third = (start + step) % 250 + 1
        if f"10.77.{third}." not in used:
            return ipaddress.ip_network(f"10.77.{third}.0/24")
    raise NetError("no free 10.77.X.0/24 subnet")


class Network:
    """The bridge, the namespaces and their addresses for `count` nodes.
    create() builds it, destroy() removes everything (idempotent, also
    after a partial create)."""

    def __init__(self, count, subnet=None, tag=None):
        self.count = count
        self.tag = f"{PREFIX}{os.getpid() if tag is None else tag}"
        self.subnet = ipaddress.ip_network(subnet) if subnet else free_subnet(os.getpid() % 250)
        hosts = list(self.subnet.hosts())
        self.bridge = f"{self.tag}br"
        self.bridge_addr = str(hosts[BRIDGE_HOST - 1])
        self.addrs = [str(hosts[i]) for i in range(count)]
        self.namespaces = [f"{self.tag}n{i + 1}" for i in range(count)]
        self._veths = [f"{self.tag}v{i + 1}" for i in range(count)]
        self._forward_rule = None
        self.blocked = {}  # namespace -> the peer addresses it drops

    def create(self):
        prefix = self.subnet.prefixlen
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.bridge_addr}/{prefix}", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        self._allow_bridged_forwarding()
        for ns, veth, addr in zip(self.namespaces, self._veths, self.addrs):
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
            run("ip", "link", "set", f"{veth}p", "netns", ns)
            run("ip", "link", "set", veth, "master", self.bridge)
            run("ip", "link", "set", veth, "up")
            inside = ("ip", "netns", "exec", ns, "ip")
            run(*inside, "link", "set", "lo", "up")
            run(*inside, "link", "set", f"{veth}p", "name", "eth0")
            run(*inside, "addr", "add", f"{addr}/{prefix}", "dev", "eth0")
            run(*inside, "link", "set", "eth0", "up")
        return self

    def _allow_bridged_forwarding(self):
        """Where bridged frames pass the host's iptables (br_netfilter), a
        FORWARD policy of DROP would cut the nodes off from each other: let
        this bridge's own traffic through, for the run only."""
        try:
            with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
                if f.read().strip() != "1":
                    return
        except OSError:
            return
        rule = ("FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
        if run("iptables", "-I", *rule, check=False).returncode == 0:
            self._forward_rule = rule

    def exec_prefix(self, index):
        """The argv prefix that runs a command inside node index's namespace."""
        return ["ip", "netns", "exec", self.namespaces[index]]

    # ---- partitions -------------------------------------------------------------------------

    def isolate(self, groups):
        """Each node drops every packet from and to the nodes it shares no
        group with (groups may overlap: a bridge node sits in two).  The
        bridge address (the clients) is never dropped."""
        for i, ns in enumerate(self.namespaces):
            seen = set()
            for group in groups:
                if i in group:
                    seen |= set(group)
            cut = [self.addrs[j] for j in range(self.count) if j not in seen and j != i]
            self._apply(ns, cut)

    def heal(self):
        for ns in self.namespaces:
            if self.blocked.get(ns):
                self._apply(ns, [])

    def _apply(self, ns, cut):
        lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
        for addr in cut:
            lines.append(f"-A INPUT -s {addr}/32 -j DROP")
            lines.append(f"-A OUTPUT -d {addr}/32 -j DROP")
        lines.append("COMMIT")
        run("ip", "netns", "exec", ns, "iptables-restore", stdin="\n".join(lines) + "\n")
        self.blocked[ns] = list(cut)

    def rules(self, index):
        """The filter rules inside node index's namespace, as iptables -S prints them."""
        return run(*self.exec_prefix(index), "iptables", "-S").stdout

    # ---- teardown -------------------------------------------------------------------------

    def destroy(self):
        """Removes the namespaces, veths and bridge (whatever of them exists)."""
        errors = []
        for ns in self.namespaces:
            for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            proc = run("ip", "netns", "del", ns, check=False)
            if proc.returncode and "No such file" not in proc.stderr:
                errors.append(proc.stderr.strip())
        for veth in self._veths:
            run("ip", "link", "del", veth, check=False)
        if self._forward_rule is not None:
            run("iptables", "-D", *self._forward_rule, check=False)
            self._forward_rule = None
        run("ip", "link", "del", self.bridge, check=False)
        return errors

    def leftovers(self):
        """Names of this network's namespaces and links that still exist."""
        ns = run("ip", "netns", "list", check=False).stdout
        links = run("ip", "-o", "link", check=False).stdout
        return [n for n in self.namespaces if n in ns] + \
            [n for n in [self.bridge, *self._veths] if f" {n}:" in links or f" {n}@" in links]
