"""What a run brings from object storage before it reads anything: its input (a local copy,
downloaded only when the object changed) and a price file on S3 or GCS. Configuration only
names them (``config.load``); nothing is downloaded before a command runs."""

from __future__ import annotations

from batchrun.config.load import RunConfig, with_prices
from batchrun.core.errors import ConfigError
from batchrun.core.scrub import url_without_secrets
from batchrun.cost.prices import load_prices_text


def fetched(config: RunConfig) -> RunConfig:
    """``config`` with its remote input downloaded (where its path says) and its remote
    price file laid over the table; ``config`` itself when it has neither."""
    if config.input.url is None and config.cost.prices_url is None:
        return config
    from batchrun.remote.objects import Storage  # only for a job with remote files

    storage = Storage(config.storage)
    if config.input.url is not None and config.output.cache_home is not None:
        storage.cached_copy(config.input.url, config.output.cache_home)
    url = config.cost.prices_url
    if url is None:
        return config
    shown = url_without_secrets(url)
    try:
        text = storage.read_bytes(url).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: a price file must be UTF-8 text") from None
    return with_prices(config, load_prices_text(text, shown))
