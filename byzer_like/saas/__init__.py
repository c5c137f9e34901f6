"""SaaS proxies: hosted model APIs served as ``Backend`` s, so SaaS aliases share pools, router, stat and client.

One module per provider (``openai_compat``, ``azure_openai``, ``claude``, ``bedrock``, ``qianwen``), plus the
shared pieces: ``secrets`` (keys that never show), ``retry`` (backoff with jitter honouring Retry-After),
``errors`` (provider exceptions -> our typed errors, by exception type), ``base`` (the common ``SaasBackend``)
and ``presets`` (one-line deployments such as ``deepseek-chat``).

Example:
    byzer-like deploy --pretrained_model_type saas/openai --model gpt4o \\
        --infer_params saas.api_key=${OPENAI_API_KEY} saas.model=gpt-4o
"""
