"""The loopback device's ``/system/bin/sh``: a small interpreter for the command lines pearl
(and a person typing `adb shell`) sends, run inside a sandbox folder that stands for the phone's
``/data/local/tmp``.

Nothing is passed to a host shell.  A line is split with `shlex` (POSIX rules, operators
``;``, ``&&``, ``||``), ``$?`` and glob patterns are expanded, ``2>/dev/null``, ``>/dev/null``
and ``2>&1`` are honoured, and each command is dispatched to a Python implementation of the
toybox command of the same name (echo, cat, getprop, grep -H, sha256sum, md5sum, ls, rm, mkdir,
chmod, mv, sleep, true, false, taskset) or, for an executable file in the sandbox, to the
`benchmark_model` stand-in (a separate process, killed when the stream closes).  Pipes, other
redirections and anything else exit with status 2 and say so.  Known simplification: quoting
does not protect ``$?``, globs or a lone ``;`` from expansion/splitting (pearl never relies on
that).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DEVICE_TMP = "/data/local/tmp"
STANDIN = Path(__file__).with_name("benchmark_model.py")
_OPERATORS = (";", "&&", "||")


@dataclass
class Output:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)

    def out(self, text: str | bytes) -> None:
        self.stdout += text.encode() if isinstance(text, str) else text

    def err(self, text: str) -> None:
        self.stderr += text.encode()


class ShellSyntaxError(Exception):
    pass


class CommandFailed(Exception):
    """A builtin command gives up: `message` goes to stderr and the command exits `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _parse_int(text: str, base: int, message: str) -> int:
    """``int(text, base)``; CommandFailed with `message` when `text` is not such a number."""
    try:
        return int(text, base)
    except ValueError:
        raise CommandFailed(message) from None


def split_commands(line: str) -> list[tuple[str | None, list[str]]]:
    """``[(operator before it, tokens)]`` for each simple command of `line`."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as err:  # unbalanced quotes
        raise ShellSyntaxError(f"syntax error: {err}") from None
    commands: list[tuple[str | None, list[str]]] = []
    operator: str | None = None
    current: list[str] = []
    for token in tokens:
        if token in _OPERATORS:
            if not current:
                raise ShellSyntaxError(f"syntax error: unexpected '{token}'")
            commands.append((operator, current))
            operator, current = token, []
        elif token in ("|", "&", ";;", "|&"):
            raise ShellSyntaxError(f"loopback sh: '{token}' is not supported")
        else:
            current.append(token)
    if current:
        commands.append((operator, current))
    elif operator not in (None, ";"):
        raise ShellSyntaxError(f"syntax error: line ends with '{operator}'")
    return commands


class Shell:
    """One shell process of the loopback device (one ``shell:`` stream)."""

    def __init__(self, device, stream=None) -> None:
        self.device = device
        self.stream = stream  # gets .process while a program runs, so closing can kill it
        self.status = 0

    # ------------------------------------------------------------------ paths
    def sandbox_path(self, device_path: str) -> Path | None:
        """Host path for a device path under /data/local/tmp, else None."""
        normal = posixpath.normpath(
            device_path if device_path.startswith("/") else "/" + device_path
        )
        if normal == DEVICE_TMP or normal.startswith(DEVICE_TMP + "/"):
            return self.device.sandbox / normal[len(DEVICE_TMP) :].lstrip("/")
        return None

    def read_file(self, device_path: str) -> bytes:
        """Contents of a device file; raises FileNotFoundError / PermissionError."""
        normal = posixpath.normpath(device_path)
        virtual = self.device.virtual_files()
        if normal in virtual:
            value = virtual[normal]
            return (value() if callable(value) else value).encode()
        host = self.sandbox_path(normal)
        if host is None:
            if normal.startswith(("/proc", "/sys", "/system", "/vendor")):
                raise FileNotFoundError(normal)
            raise PermissionError(normal)
        if host.is_dir():
            raise IsADirectoryError(normal)
        return host.read_bytes()

    def glob(self, pattern: str) -> list[str]:
        if not any(ch in pattern for ch in "*?["):
            return [pattern]
        matches = [p for p in self.device.virtual_files() if fnmatch.fnmatchcase(p, pattern)]
        host_pattern = self.sandbox_path(pattern)
        if host_pattern is not None:
            root = self.device.sandbox
            for hit in root.glob(str(host_pattern.relative_to(root))):
                matches.append(posixpath.join(DEVICE_TMP, hit.relative_to(root).as_posix()))
        return sorted(matches) or [pattern]  # no match: the word stays as it is (POSIX sh)

    # ------------------------------------------------------------------ running
    def run_line(self, line: str) -> tuple[bytes, int]:
        """Run a command line; returns (merged output, exit status)."""
        self.device.command_log.append(line)
        output = Output()
        try:
            commands = split_commands(line)
        except ShellSyntaxError as err:
            return f"/system/bin/sh: {err}\n".encode(), 2
        for operator, tokens in commands:
            if operator == "&&" and self.status != 0:
                continue
            if operator == "||" and self.status == 0:
                continue
            self.status = self.run_simple(tokens, output)
        return bytes(output.stdout), self.status

    def run_simple(self, tokens: list[str], sink: Output) -> int:
        words: list[str] = []
        drop_stdout = drop_stderr = False
        index = 0
        while index < len(tokens):
            token = tokens[index]
            fd = None
            if token.isdigit() and index + 1 < len(tokens) and tokens[index + 1] in (">", ">&"):
                fd, index = int(token), index + 1
                token = tokens[index]
            if token in (">", ">&", ">>", "<"):
                if index + 1 >= len(tokens):
                    sink.out("/system/bin/sh: syntax error: redirection without target\n")
                    return 2
                target = tokens[index + 1]
                index += 2
                if token == ">&" and target == "1" and fd == 2:
                    continue  # stderr is merged into stdout already
                if token == ">" and target == "/dev/null":
                    if fd == 2:
                        drop_stderr = True
                    else:
                        drop_stdout = True
                    continue
                sink.out(f"/system/bin/sh: loopback sh: redirection {token} {target} unsupported\n")
                return 2
            words.append(token)
            index += 1
        expanded: list[str] = []
        for word in words:
            word = word.replace("$?", str(self.status))
            expanded.extend(self.glob(word))
        if not expanded:
            return 0
        local = Output()
        status = self.execute(expanded, local)
        if not drop_stdout:
            sink.out(bytes(local.stdout))
        if not drop_stderr:
            sink.out(bytes(local.stderr))  # shell: service merges stderr into the stream
        return status

    def execute(self, argv: list[str], io: Output) -> int:
        name = argv[0]
        builtin = getattr(self, f"cmd_{name}", None) if "/" not in name else None
        if builtin is not None:
            try:
                return builtin(argv[1:], io)
            except CommandFailed as failure:
                io.err(failure.message)
                return failure.status
        if "/" in name:
            return self.exec_file(argv, io)
        io.err(f"/system/bin/sh: {name}: inaccessible or not found\n")
        return 127

    # ------------------------------------------------------------------ commands
    def cmd_echo(self, args, io):
        io.out(" ".join(args) + "\n")
        return 0

    def cmd_true(self, args, io):
        return 0

    def cmd_false(self, args, io):
        return 1

    def cmd_sleep(self, args, io):
        time.sleep(float(args[0]) if args else 0)
        return 0

    def cmd_getprop(self, args, io):
        props = self.device.script.props
        if args:
            io.out(props.get(args[0], args[1] if len(args) > 1 else "") + "\n")
        else:
            io.out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
        return 0

    def _each_file(self, name, paths, io, action):
        status = 0
        for path in paths:
            try:
                action(path, self.read_file(path))
            except FileNotFoundError:
                io.err(f"{name}: {path}: No such file or directory\n")
                status = 1
            except PermissionError:
                io.err(f"{name}: {path}: Permission denied\n")
                status = 1
            except IsADirectoryError:
                io.err(f"{name}: {path}: Is a directory\n")
                status = 1
        return status

    def cmd_cat(self, args, io):
        return self._each_file("cat", args, io, lambda path, data: io.out(data))

    def cmd_grep(self, args, io):
        flags = [a for a in args if a.startswith("-")]
        rest = [a for a in args if not a.startswith("-")]
        if not rest or rest[0] != "." or set("".join(flags)) - set("-Hs"):
            raise CommandFailed("grep: loopback grep supports only 'grep [-H] [-s] . FILE...'\n", 2)
        found = []

        def match(path, data):
            for line in data.decode(errors="replace").splitlines():
                if line:
                    found.append(True)
                    io.out(f"{path}:{line}\n" if "H" in "".join(flags) else f"{line}\n")

        status = self._each_file("grep", rest[1:], io, match)
        return status if status else (0 if found else 1)

    def _digest(self, name, algorithm, args, io):
        return self._each_file(
            name, args, io, lambda p, d: io.out(f"{hashlib.new(algorithm, d).hexdigest()}  {p}\n")
        )

    def cmd_sha256sum(self, args, io):
        if self.device.faults.no_sha256sum:
            raise CommandFailed("/system/bin/sh: sha256sum: inaccessible or not found\n", 127)
        return self._digest("sha256sum", "sha256", args, io)

    def cmd_md5sum(self, args, io):
        return self._digest("md5sum", "md5", args, io)

    def _sandbox_args(self, name, args):
        paths = []
        for arg in args:
            host = self.sandbox_path(arg)
            if host is None:
                raise CommandFailed(f"{name}: {arg}: Permission denied\n")
            paths.append(host)
        return paths

    def cmd_ls(self, args, io):
        paths = self._sandbox_args("ls", [a for a in args if not a.startswith("-")])
        status = 0
        for device_path, host in zip(
            [a for a in args if not a.startswith("-")], paths, strict=True
        ):
            if host.is_dir():
                io.out("".join(f"{entry.name}\n" for entry in sorted(host.iterdir())))
            elif host.exists():
                io.out(f"{device_path}\n")
            else:
                io.err(f"ls: {device_path}: No such file or directory\n")
                status = 1
        return status

    def cmd_rm(self, args, io):
        flags = "".join(a for a in args if a.startswith("-"))
        paths = self._sandbox_args("rm", [a for a in args if not a.startswith("-")])
        for host in paths:
            if host == self.device.sandbox:
                raise CommandFailed("rm: refusing to remove /data/local/tmp\n")
            if host.is_dir() and "r" in flags:
                shutil.rmtree(host)
            elif host.is_dir():
                raise CommandFailed(f"rm: {host.name}: Is a directory\n")
            elif host.exists():
                host.unlink()
            elif "f" not in flags:
                raise CommandFailed(f"rm: {host.name}: No such file or directory\n")
        return 0

    def cmd_mkdir(self, args, io):
        parents = "-p" in args
        paths = self._sandbox_args("mkdir", [a for a in args if not a.startswith("-")])
        for host in paths:
            try:
                host.mkdir(parents=parents, exist_ok=parents)
            except OSError as err:
                raise CommandFailed(f"mkdir: {host.name}: {err.strerror}\n") from None
        return 0

    def cmd_chmod(self, args, io):
        if len(args) < 2:
            raise CommandFailed("chmod: needs MODE FILE...\n")
        mode = _parse_int(args[0], 8, f"chmod: loopback chmod takes octal modes, not {args[0]}\n")
        for host in self._sandbox_args("chmod", args[1:]):
            if not host.exists():
                raise CommandFailed(f"chmod: {host.name}: No such file or directory\n")
            host.chmod(mode)
        return 0

    def cmd_mv(self, args, io):
        paths = self._sandbox_args("mv", args)
        if len(paths) != 2:
            return 1
        os.replace(paths[0], paths[1])
        return 0

    def cmd_taskset(self, args, io):
        if not args or args[0].startswith("-"):
            raise CommandFailed(
                "taskset: loopback taskset supports only 'taskset MASK COMMAND...'\n"
            )
        mask = _parse_int(args[0], 16, f"taskset: bad mask '{args[0]}'\n")
        if mask & ((1 << len(self.device.script.cpus)) - 1) == 0:
            raise CommandFailed("taskset: sched_setaffinity: Invalid argument\n")
        if len(args) < 2:
            raise CommandFailed("taskset: needs a command\n")
        self.device.taskset_masks.append(args[0])
        return self.execute(args[1:], io)

    # ------------------------------------------------------------------ programs
    def exec_file(self, argv: list[str], io: Output) -> int:
        path = argv[0]
        host = self.sandbox_path(path)
        if host is None or not host.is_file():
            io.err(f"/system/bin/sh: {path}: inaccessible or not found\n")
            return 127
        if not os.access(host, os.X_OK):
            io.err(f"/system/bin/sh: {path}: can't execute: Permission denied\n")
            return 126
        header = host.read_bytes()[:20]
        if header[:4] != b"\x7fELF" or int.from_bytes(header[18:20], "little") != 183:
            io.err(f"/system/bin/sh: {path}: not executable: not an aarch64 ELF file\n")
            return 126
        return self.run_benchmark_standin(argv, io)

    def run_benchmark_standin(self, argv: list[str], io: Output) -> int:
        device = self.device
        env = {
            **os.environ,
            "LOOPBACK_SANDBOX": str(device.sandbox),
            "LOOPBACK_DEVICE_TMP": DEVICE_TMP,
            "LOOPBACK_FAULT": device.faults.benchmark,
        }
        device.benchmark_runs += 1
        process = subprocess.Popen(
            [sys.executable, str(STANDIN), *argv[1:]],
            cwd=device.sandbox,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.stream is not None:
            self.stream.process = process
        if device.faults.drop_during_run > 0:
            # the connection drops while the tool is still running (deterministically: the
            # drop happens before the tool may finish, however fast the machine is)
            device.faults.drop_during_run -= 1
            device.drop_connections_later(device.faults.drop_delay_s).join()
            process.kill()
        output, _ = process.communicate()
        if self.stream is not None:
            self.stream.process = None
        io.out(output)
        if process.returncode < 0:
            name = signal.Signals(-process.returncode).name
            text = "Segmentation fault" if name == "SIGSEGV" else f"Killed by {name}"
            io.err(f"{text} \n")
            return 128 - process.returncode
        return process.returncode
