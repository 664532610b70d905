"""Publishing: never overwrite, recover after a crash, clear errors on a bad products disk."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from reconciler.errors import TemporaryError
from reconciler.io.checksum import sha256
from reconciler.steps.publish import run


def stage(tmp_path: Path, content: bytes, name: str = "mosaic.fits") -> Path:
    staged = tmp_path / "staging" / name
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(content)
    staged.with_name(name.removesuffix(".fits") + ".png").write_bytes(b"\x89PNG" + content[:8])
    return staged


def payload(staged: Path, products: Path) -> dict:
    return {
        "stage_path": str(staged),
        "products_dir": str(products),
        "stem": "dsa110_mosaic_test",
        "group_id": 1,
        "generation": 1,
        "taken": [],
        "attempt_id": uuid.uuid4().hex,
        "coverage_path": str(products.parent / "coverage.moc.fits"),
    }


def test_publishing_copies_with_checksum_and_is_idempotent(tmp_path):
    staged = stage(tmp_path, b"SIMPLE = T" * 100)
    products = tmp_path / "products" / "mosaics"

    first = run(payload(staged, products))
    again = run(payload(staged, products))

    final = products / "dsa110_mosaic_test.fits"
    png = products / "dsa110_mosaic_test.png"
    assert (
        first
        == again
        == {
            "published_path": str(final),
            "checksum": sha256(staged),
            "companions": {str(png): sha256(png)},
            "size_bytes": final.stat().st_size + png.stat().st_size,
            "footprint": [],
        }
    )
    assert final.read_bytes() == staged.read_bytes()
    assert (products / "dsa110_mosaic_test.png").is_file()
    assert sorted(p.name for p in products.iterdir()) == [
        "dsa110_mosaic_test.fits",
        "dsa110_mosaic_test.png",
    ], "no temporary files are left behind"


def test_identical_bytes_of_another_product_get_a_name_of_their_own(tmp_path):
    # A new version of a window whose members did not change is byte for byte the same
    # mosaic; the first version's name is registered to it, so the new one is _v2.
    content = b"same mosaic" * 50
    products = tmp_path / "products" / "mosaics"
    first = run(payload(stage(tmp_path / "a", content), products))

    second = run(
        {
            **payload(stage(tmp_path / "b", content), products),
            "generation": 2,
            "taken": [first["published_path"]],
        }
    )

    assert second["published_path"] == str(products / "dsa110_mosaic_test_v2.fits")
    assert Path(second["published_path"]).read_bytes() == content
    assert (products / "dsa110_mosaic_test_v2.png").is_file()


def test_a_name_clash_gets_a_new_version_and_never_overwrites(tmp_path):
    products = tmp_path / "products" / "mosaics"
    run(payload(stage(tmp_path / "a", b"first product" * 50), products))
    before = (products / "dsa110_mosaic_test.fits").read_bytes()

    second = run(payload(stage(tmp_path / "b", b"second product" * 50), products))

    assert second["published_path"] == str(products / "dsa110_mosaic_test_v2.fits")
    assert (products / "dsa110_mosaic_test.fits").read_bytes() == before
    assert (products / "dsa110_mosaic_test_v2.png").is_file()


def test_a_crash_between_copy_and_registry_is_recognised(tmp_path):
    staged = stage(tmp_path, b"data" * 1000)
    products = tmp_path / "products" / "mosaics"
    products.mkdir(parents=True)
    # What a crash after the link and before the registry row leaves behind:
    (products / "dsa110_mosaic_test.fits").write_bytes(staged.read_bytes())
    (products / ".dsa110_mosaic_test.png.tmp123").write_bytes(b"half")

    result = run(payload(staged, products))

    assert result["published_path"] == str(products / "dsa110_mosaic_test.fits")
    assert not (products / "dsa110_mosaic_test_v2.fits").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB filesystem, or a read-only one, mounted for the test (needs root)."""
    mounted = []

    def mount(options: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True
        )
        if done.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"cannot mount a test filesystem: {done.stderr.decode()}")
            pytest.skip(f"cannot mount a test filesystem: {done.stderr.decode()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_a_full_disk_is_a_clear_temporary_error_and_leaves_nothing(tmp_path, small_disk):
    staged = stage(tmp_path, os.urandom(256 * 1024))
    products = small_disk("size=64k") / "mosaics"

    with pytest.raises(TemporaryError, match="no space left to publish"):
        run(payload(staged, products))

    assert list(products.iterdir()) == []
    assert staged.is_file()


def test_a_read_only_products_directory_is_a_clear_error(tmp_path, small_disk):
    staged = stage(tmp_path, b"x" * 100)
    products = small_disk("ro,size=64k")

    with pytest.raises(TemporaryError, match="is not writable"):
        run(payload(staged, products / "mosaics"))


def test_a_companion_name_held_by_another_file_moves_the_whole_product_on(tmp_path):
    staged = stage(tmp_path, b"mosaic bytes" * 100)
    products = tmp_path / "products" / "mosaics"
    products.mkdir(parents=True)
    foreign = products / "dsa110_mosaic_test.png"
    foreign.write_bytes(b"another product's quicklook")

    result = run(payload(staged, products))

    assert result["published_path"] == str(products / "dsa110_mosaic_test_v2.fits")
    png = staged.with_name("mosaic.png")
    assert (products / "dsa110_mosaic_test_v2.png").read_bytes() == png.read_bytes()
    assert foreign.read_bytes() == b"another product's quicklook"
    assert not (products / "dsa110_mosaic_test.fits").exists()
