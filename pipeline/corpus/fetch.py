"""Get the .deb files with apt (no install), and read each package's licence.

Downloads land in <cache>/l10n-debs/ and are reused while their sha256 matches the apt index, so a
`--force` rebuild reads them again without the network.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts import file_sha256


class AptUnavailable(RuntimeError):
    """No apt, no index, or nothing could be downloaded."""


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    sha256: str
    path: Path


def _apt_show(names: list[str]) -> dict[str, dict[str, str]]:
    """The candidate version of each package as the local apt index has it (one apt-cache call)."""
    out = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *names], capture_output=True, text=True, check=False
    ).stdout
    info = {}
    for stanza in out.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.M))
        if "Package" in fields and fields["Package"] not in info:
            info[fields["Package"]] = fields
    return info


def deb_filename(name: str, version: str, arch: str) -> str:
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"  # as apt-get download names it


def download(names: list[str], debdir: Path, log=print) -> dict[str, Deb]:
    """Download (or reuse) the current .deb of every name that the apt index knows. Raises AptUnavailable."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise AptUnavailable("apt-get/dpkg-deb not found")
    info = _apt_show(names)
    if not info and os.geteuid() == 0:  # a fresh machine has no package lists yet
        log("apt index empty: running apt-get update")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        info = _apt_show(names)
    if not info:
        raise AptUnavailable("the apt index knows none of the packages (run apt-get update)")
    missing = sorted(set(names) - set(info))
    if missing:
        log(f"not in the apt index, skipped: {' '.join(missing)}")
    debdir.mkdir(parents=True, exist_ok=True)
    debs, todo = {}, []
    for name, f in sorted(info.items()):
        path = debdir / deb_filename(name, f["Version"], f["Architecture"])
        debs[name] = Deb(name, f["Version"], f.get("SHA256", ""), path)
        if not (path.exists() and file_sha256(path) == debs[name].sha256):
            todo.append(name)
    if todo:
        log(f"downloading {len(todo)} packages with apt-get download")
        r = subprocess.run(["apt-get", "download", "-q", *todo], cwd=debdir, capture_output=True, text=True)
        if r.returncode != 0:
            err = [ln for ln in r.stderr.splitlines() if ln.startswith("E:")]
            raise AptUnavailable(err[0] if err else f"apt-get download exited {r.returncode}")
    for name, d in list(debs.items()):
        if not d.path.exists():
            raise AptUnavailable(f"{d.path.name} missing after apt-get download")
        got = file_sha256(d.path)
        if d.sha256 and got != d.sha256:
            raise AptUnavailable(f"{d.path.name}: sha256 {got} does not match the apt index")
        debs[name] = Deb(d.name, d.version, got, d.path)
    return debs


def read_copyright(deb: Path, pkg: str) -> str | None:
    """usr/share/doc/PKG/copyright of a .deb (for packages whose own doc dir is a symlink to this one's)."""
    r = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=False)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        for m in tar:
            if m.isfile() and m.name.lstrip(".") == f"/usr/share/doc/{pkg}/copyright":
                return tar.extractfile(m).read().decode("utf-8", "replace")
    return None


_NAMED = [  # phrases of non-DEP-5 copyright files -> SPDX-like short names
    (r"GNU (?:Lesser|Library) General Public Licen[sc]e", "LGPL"),
    (r"GNU Affero General Public Licen[sc]e", "AGPL"),
    (r"GNU General Public Licen[sc]e", "GPL"),
    (r"GNU Free Documentation Licen[sc]e", "GFDL"),
    (r"\b(?:A|L)?GPL(?:-?v?\d(?:\.\d)?\+?)?\b", None),  # already a short name
    (r"Mozilla Public Licen[sc]e", "MPL"),
    (r"Apache Licen[sc]e", "Apache"),
    (r"Creative Commons", "CC"),
    (r"\bBSD\b", "BSD"),
    (r"\bMIT\b|\bExpat\b", "MIT"),
    (r"Artistic Licen[sc]e", "Artistic"),
    (r"public domain", "public-domain"),
]


def licence(copyright_text: str | None) -> str:
    """Short licence names from a DEP-5 copyright file (its License: fields), else the licences its prose names."""
    if not copyright_text:
        return "unknown (no copyright file shipped)"
    names = [n.strip() for n in re.findall(r"^License:[ \t]*(\S[^\n]*)$", copyright_text, re.M)]
    if names:
        return ", ".join(dict.fromkeys(names))
    found = []
    for pat, name in _NAMED:
        for m in re.finditer(pat, copyright_text, re.I):
            if name is None:
                found.append(m.group(0))
            else:  # "... General Public License, version 2" / "either version 2.1 of the License"
                v = re.match(
                    r"[\s,]*(?:as published by[^.]*?)?[\s,(]*(?:either\s+)?version\s+(\d(?:\.\d)?)",
                    copyright_text[m.end() : m.end() + 120],
                    re.I,
                )
                found.append(f"{name}-{v.group(1)}" if v else name)
    if found:
        return "not DEP-5, names found: " + ", ".join(dict.fromkeys(found))
    first = next((ln.strip() for ln in copyright_text.splitlines() if ln.strip()), "")
    return "not DEP-5, first line: " + first[:160]
