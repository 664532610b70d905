"""Product checks never remember a falsehood: a failed read is tried again next pass."""

from __future__ import annotations

from types import SimpleNamespace

from reconciler.io import ms as ms_module


def test_a_read_error_is_not_remembered_as_a_missing_ms(tmp_path, monkeypatch):
    ms = tmp_path / "obs.ms"
    ms.mkdir()
    (ms / "table.dat").write_bytes(b"descriptor")
    reads = []

    def flaky_summary(path):
        reads.append(path)
        if len(reads) == 1:
            raise ms_module.MsError(f"{path}: unreadable Measurement Set (NFS hiccup)")
        return SimpleNamespace(n_rows=42)

    monkeypatch.setattr(ms_module, "read_ms_summary", flaky_summary)

    assert ms_module.ms_has_rows(str(ms)) is False
    assert ms_module.ms_has_rows(str(ms)) is True, "the failure was not cached"
    assert ms_module.ms_has_rows(str(ms)) is True
    assert len(reads) == 2, "a good MS is remembered until its descriptor changes"
