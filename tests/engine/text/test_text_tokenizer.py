from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from cortex.engine.text.errors import TokenizerLoadError
from cortex.engine.text.tokenizer import Tokenizer


def test_folder_without_tokenizer_json_gives_none(tmp_path):
    assert Tokenizer.from_folder(tmp_path) is None


def test_qwen_folder_facts(qwen):
    assert qwen.vocab_size == 248044 + 33
    assert qwen.eos_token_ids == (qwen.token_to_id("<|im_end|>"),) == (248046,)
    assert qwen.pad_token_id == 248044
    assert qwen.id_to_token(248068) == "<think>"
    assert qwen.id_to_token(10**7) is None
    assert qwen.is_byte_level
    assert qwen.token_bytes(qwen.encode(" hello")[0]) == b" hello"
    assert 248046 in qwen.special_token_ids
    assert qwen.token_to_id("<tool_call>") not in qwen.special_token_ids


def test_encode_decode_and_special_tokens(qwen):
    ids = qwen.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 248045
    assert ids[-1] == 248046
    assert qwen.decode(ids) == "user\nhi"
    assert qwen.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nhi<|im_end|>"


def test_a_long_text_is_tokenised_while_other_threads_run(qwen):
    """tokenizers' ``encode`` holds the GIL throughout; a long text must not stop the process's other
    threads (a server's event loop) for as long as it takes."""
    text = "<|im_start|>user\n" + "a few words " * 20_000 + "<|im_end|>"
    ids: list[int] = []
    worker = threading.Thread(target=lambda: ids.extend(qwen.encode(text)))
    ticks = 0
    worker.start()
    while worker.is_alive():  # each tick needs the GIL back
        ticks += 1
        time.sleep(0.001)
    assert ticks >= 10
    assert ids == qwen._tokenizer.encode(text).ids
    assert ids[0] == 248045


def _copy(qwen_folder, tmp_path, *, drop_template: bool = False):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(qwen_folder / "tokenizer.json", folder)
    config = json.loads((qwen_folder / "tokenizer_config.json").read_text())
    if drop_template:
        del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_generation_config_eos_ids_are_added(qwen_folder, tmp_path):
    folder = _copy(qwen_folder, tmp_path)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [248046, 248044]}))
    tokenizer = Tokenizer.from_folder(folder)
    assert tokenizer is not None
    assert tokenizer.eos_token_ids == (248046, 248044)


def test_chat_template_jinja_file_takes_precedence(qwen_folder, tmp_path):
    folder = _copy(qwen_folder, tmp_path)
    (folder / "chat_template.jinja").write_text("{{ messages[0].content }}|{{ eos_token }}")
    tokenizer = Tokenizer.from_folder(folder)
    assert tokenizer is not None
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}]) == "hi|<|im_end|>"


def test_no_template_falls_back_to_chatml(qwen_folder, tmp_path):
    tokenizer = Tokenizer.from_folder(_copy(qwen_folder, tmp_path, drop_template=True))
    assert tokenizer is not None
    assert tokenizer.chat_template.is_fallback
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    )
    assert (
        prompt
        == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_malformed_files_raise_load_error(qwen_folder, tmp_path):
    folder = _copy(qwen_folder, tmp_path)
    (folder / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerLoadError, match=r"tokenizer_config\.json"):
        Tokenizer.from_folder(folder)
    (folder / "tokenizer_config.json").unlink()
    (folder / "chat_template.jinja").write_text("{% if %}")
    with pytest.raises(TokenizerLoadError, match="does not compile"):
        Tokenizer.from_folder(folder)
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(TokenizerLoadError, match=r"tokenizer\.json"):
        Tokenizer.from_folder(folder)
