"""Adapters from agent frameworks to Herald events. Each lives in its own module and imports its
framework only when that module is imported:

- :mod:`herald_client.integrations.langchain`: ``HeraldCallbackHandler`` for LangChain and
  LangGraph (``pip install "herald-client[langchain]"``);
- :mod:`herald_client.integrations.openai_agents`: ``run_streamed`` / ``publish_stream`` for the
  OpenAI Agents SDK (``pip install "herald-client[openai-agents]"``).

The mapping tables are in the repository's docs/integrations.md.
"""
