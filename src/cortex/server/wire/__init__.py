"""The dialects the neuron speaks, one module each: a request body -> a parsed request for the engine,
and the engine's output -> that dialect's body and stream.

    request.py    the dialect-neutral parsed requests (ChatRequest, CompletionRequest)
    fields.py     typed reading of a JSON body's fields, errors naming the field
    openai.py     OpenAI Chat Completions and Completions
    anthropic.py  Anthropic Messages (and count_tokens): the Message and its events built from chat deltas
"""
