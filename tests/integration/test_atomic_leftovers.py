"""A directory or file an atomic write was making when the process died of SIGKILL leaves
hidden leftovers, never a half directory under its name; ``clean_leftovers`` settles them."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlharness.runs.io import atomic_directory, clean_leftovers, remove_directory

REPLACE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from mlharness.runs import io

    target = Path(sys.argv[1])
    renames = []
    original = os.replace

    def replace(src, dst):
        original(src, dst)
        renames.append(dst)
        if len(renames) == {after}:
            os.kill(os.getpid(), signal.SIGKILL)

    io.os.replace = replace
    with io.atomic_directory(target) as tmp:
        (tmp / "weights").write_text("new")
    """
)


@pytest.mark.parametrize(
    ("after", "expected"),
    [(1, "old"), (2, "new")],
    ids=["between-the-two-renames", "before-the-old-one-is-deleted"],
)
def test_a_directory_replaced_when_killed_is_whole_after_cleaning(
    tmp_path: Path, after: int, expected: str
) -> None:
    target = tmp_path / "ckpt_last_00000010"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("old")
    code = REPLACE.format(after=after)
    proc = subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert target.exists() == (after == 2)  # after the first rename, no directory there
    assert f".{target.name}.old" in [p.name for p in tmp_path.iterdir()]
    assert clean_leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert (target / "weights").read_text() == expected


def test_clean_leftovers_takes_only_what_atomic_writes_leave(tmp_path: Path) -> None:
    (tmp_path / ".ckpt_last_00000050.lsx98_ar.tmp").mkdir()  # a checkpoint being written
    (tmp_path / ".ckpt_last_00000050.lsx98_ar.tmp" / "model.safetensors").write_text("x")
    (tmp_path / ".summary.json.k2j4_9zq.tmp").write_text("{")  # a file being written
    (tmp_path / ".ckpt_last_00000005.old").mkdir()  # set aside, its replacement never came
    (tmp_path / ".ckpt_last_00000005.old" / "model.safetensors").write_text("5")
    (tmp_path / ".ckpt_last_00000010.old").mkdir()  # set aside, replaced: garbage
    (tmp_path / "ckpt_last_00000010").mkdir()
    keep = [".hidden", "notes.tmp", ".x.tmp", ".file.old", ".short.abc.tmp"]
    for name in keep:
        (tmp_path / name).write_text("mine")
    assert len(clean_leftovers(tmp_path)) == 4
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([*keep, "ckpt_last_00000005", "ckpt_last_00000010"])
    assert (tmp_path / "ckpt_last_00000005" / "model.safetensors").read_text() == "5"


def test_a_directory_deleted_when_killed_is_gone_from_its_name(tmp_path: Path) -> None:
    target = tmp_path / "ckpt_last_00000005"
    target.mkdir()
    for i in range(3):
        (target / f"part{i}").write_text("x")
    code = textwrap.dedent(
        """
        import os, shutil, signal, sys
        from mlharness.runs import io

        def rmtree(path, ignore_errors=False):
            os.unlink(os.path.join(path, "part0"))  # a deletion cut short
            os.kill(os.getpid(), signal.SIGKILL)

        io.shutil.rmtree = rmtree
        io.remove_directory(sys.argv[1])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    (leftover,) = tmp_path.iterdir()
    assert leftover.name.startswith(".ckpt_last_00000005.") and leftover.name.endswith(".tmp")
    assert clean_leftovers(tmp_path) == [leftover] and list(tmp_path.iterdir()) == []
    remove_directory(target)  # gone already: not an error
