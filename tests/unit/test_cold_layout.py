"""The cold tier's paths and URLs (no servers)."""

from __future__ import annotations

from datetime import date

import pytest

from consumer import exceptions, settings
from consumer.cold import gate, layout, storage


def test_paths_are_hive_style_and_a_tenant_never_makes_a_directory() -> None:
    month = date(2026, 1, 1)
    assert (
        layout.part("acme", month, 0)
        == "conversation_history/tenant_id=acme/month=2026-01/part-0.parquet"
    )
    odd = layout.month_dir("a/b=c d", month)
    assert odd == "conversation_history/tenant_id=a%2Fb%3Dc%20d/month=2026-01"
    assert layout.tenant_of(odd.split("/")[1].removeprefix("tenant_id=")) == "a/b=c d"
    assert layout.manifest("abc") == "_manifests/abc.json"
    assert layout.staged_part("acme", month, "x", 2).startswith(
        "_staging/tenant_id=acme/month=2026-01/x/"
    )


@pytest.mark.parametrize(
    "url", ["http://x/y", "file://relative/path", "file:relative", "s3:///no-bucket", "/plain/path"]
)
def test_a_bad_cold_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(exceptions.ConfigError, match="ARCHIVER_COLD_URL"):
        settings.load(cold_url=url)


def test_good_cold_urls() -> None:
    assert settings.load(cold_url="s3://bucket/prefix").cold_url == "s3://bucket/prefix"
    where = storage.open_url("file:///var/lib/cold/")
    assert (where.base, where.path("a/b")) == ("/var/lib/cold", "/var/lib/cold/a/b")
    bucket = storage.open_url("s3://bucket/some/prefix/", "http://127.0.0.1:9000")
    assert bucket.base == "bucket/some/prefix"


def test_no_cold_tier_is_a_configuration_error_and_months_are_checked() -> None:
    with pytest.raises(exceptions.ConfigError, match="ARCHIVER_COLD_URL"):
        gate.open_storage(settings.load())
    assert gate.month_of("2026-02") == date(2026, 2, 1)
    for bad in ("2026", "2026-13", "feb"):
        with pytest.raises(exceptions.UsageError):
            gate.month_of(bad)
