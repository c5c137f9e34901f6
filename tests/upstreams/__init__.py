"""Local fake provider servers (127.0.0.1 only) speaking each provider's wire protocol, for tests and benches.

Each server runs an aiohttp app on its own event loop in a daemon thread, checks the key like the provider does,
records what it received, and plays scripted faults (status + headers, a delay, a stream cut mid-way).

Example:
    >>> from tests.upstreams.openai_server import OpenAIUpstream
    >>> with OpenAIUpstream(api_key="sk-test") as up:  # doctest: +SKIP
    ...     openai.OpenAI(base_url=up.url + "/v1", api_key="sk-test").models.list()
"""
